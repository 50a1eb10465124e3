"""Measure jobtrace's overhead per job against the alternatives.

Runs real Celery, RQ and Dramatiq workers and producers against Redis on
127.0.0.1:6379, then measures the span budget (:mod:`benchmarks.budget`),
prints the results with the wall time of each part, and rewrites
BENCHMARKS.md. ``nox -s bench`` installs what the setups need and runs this
module. ``nox -s bench -- --quick`` runs one short round of jobtrace
against uninstrumented workers and producers in about a minute, for
development, and prints its tables without rewriting BENCHMARKS.md.
``--setups`` adds the other instrumentations to it, and ``--host`` chooses
the job systems to measure. This is a
measurement, not a test: it exits with an error only when a run cannot be
measured, and a missed target is reported, not failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import redis
from kombu.exceptions import OperationalError

from benchmarks import (
    _budget_tables,
    _document,
    _machine,
    _report,
    _targets,
    budget,
    celery_bench,
    dramatiq_bench,
    rq_bench,
)
from benchmarks._process import ROOT, BenchmarkError
from benchmarks._samples import BASELINE, ProducerSample, WorkerSample
from benchmarks._sink import TelemetrySink
from benchmarks._timing import Stopwatch


@dataclasses.dataclass(frozen=True)
class Mode:
    """How many rounds to run, and how much work each round does."""

    name: str
    rounds: int
    jobs: int
    calls: int
    warmup: int
    budget: budget.Sizes


# Most of a round is start-up: each of the 27 worker and producer
# processes of a round with every setup took 1 to 4 s to start and stop on
# a 2-core VM, depending on its speed. Full runs there took 6.7 minutes on
# a fast day and 15.7 on a slow one.
FULL = Mode("full", rounds=5, jobs=500, calls=500, warmup=100, budget=budget.FULL_SIZES)
QUICK = Mode(
    "quick", rounds=1, jobs=200, calls=200, warmup=50, budget=budget.QUICK_SIZES
)
#: The setups of a quick run without ``--setups``: with the uninstrumented
#: one, 16 processes instead of 27 per round.
QUICK_SETUPS = ("jobtrace",)
#: The page that a full run rewrites.
PAGE = ROOT / "BENCHMARKS.md"


class Host(Protocol):
    """A job system under test; :mod:`benchmarks.celery_bench` is one."""

    @property
    def HOST(self) -> str: ...

    @property
    def SETUP_LABELS(self) -> Mapping[str, str]: ...

    @property
    def WORKER_LABELS(self) -> Mapping[str, str]: ...

    @property
    def FORKING_WORKERS(self) -> Mapping[str, str]: ...

    @property
    def JOBS_SHARE(self) -> Mapping[str, float]: ...

    def unavailable_setups(
        self, setups: Sequence[str], sink: TelemetrySink, redis_url: str
    ) -> Mapping[str, str]: ...

    def run_worker(
        self, worker: str, setup: str, jobs: int, round_number: int,
        sink: TelemetrySink, redis_url: str,
    ) -> WorkerSample: ...  # fmt: skip

    def run_producer(
        self, setup: str, calls: int, warmup: int, round_number: int,
        sink: TelemetrySink, redis_url: str,
    ) -> ProducerSample: ...  # fmt: skip


HOSTS: tuple[Host, ...] = (celery_bench, rq_bench, dramatiq_bench)
HOST_CHOICES = [host.HOST for host in HOSTS]
SETUP_CHOICES = sorted({s for host in HOSTS for s in host.SETUP_LABELS} - {BASELINE})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(arguments)
    missing = _setups_on_no_host(args.setups, args.host)
    if missing:
        # Otherwise the run measures only the uninstrumented setup.
        parser.error(
            f"setup {', '.join(missing)} does not exist for host "
            f"{', '.join(args.host)}; choose another --setups or --host"
        )
    overrides = {name: getattr(args, name) for name in ("rounds", "jobs", "calls")}
    mode = dataclasses.replace(
        QUICK if args.quick else FULL,
        **{name: value for name, value in overrides.items() if value is not None},
    )
    if args.quick and not args.setups:
        args.setups = list(QUICK_SETUPS)
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    try:
        _check_redis(redis_url)
        text, document = _run(mode, args, redis_url, _command(arguments))
    except (BenchmarkError, redis.RedisError, OperationalError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print(text)
    if args.no_write:
        return 0
    if args.quick and args.output is None:
        # One short round must not replace the figures of a full run.
        print(f"\nleft {PAGE.name} as it is; --output FILE writes a quick run's page")
        return 0
    output = args.output or PAGE
    output.write_text(document)
    print(f"\nwrote {output}")
    return 0


def _run(
    mode: Mode, args: argparse.Namespace, redis_url: str, command: str
) -> tuple[str, str]:
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = _machine.load_average()
    clock = time.monotonic()
    hosts = [host for host in HOSTS if not args.host or host.HOST in args.host]
    stopwatch = Stopwatch()
    with TelemetrySink() as sink:
        skipped = {
            host.HOST: host.unavailable_setups(
                _chosen(host, args.setups), sink, redis_url
            )
            for host in hosts
        }
        runner = _Runner(mode, args.setups, skipped, sink, redis_url, stopwatch)
        workers = runner.workers(hosts)
        producers = runner.producers(hosts)
    budget_tables = []
    if not args.no_budget:
        with stopwatch.timing("span budget"):
            figures = budget.measure(mode.budget, progress=_progress)
        budget_tables = _budget_tables.tables(figures)
    labels = {host.HOST: {**host.SETUP_LABELS, **host.WORKER_LABELS} for host in HOSTS}
    forking = {host.HOST: host.FORKING_WORKERS for host in hosts}
    tables = [
        _report.worker_table(workers, labels, skipped),
        _report.producer_table(producers, labels, skipped),
        *_report.horse_tables(workers, labels, forking),
        _targets.target_table(workers, producers, labels, forking),
        *budget_tables,
    ]
    run = _document.RunInfo(
        command=command,
        mode=_describe(mode, hosts, args.setups, with_budget=not args.no_budget),
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        minutes=(time.monotonic() - clock) / 60,
        machine=_machine.machine(),
        versions=_machine.versions(redis_url),
        load_before=load_before,
        load_after=_machine.load_average(),
    )
    _progress(f"\n{_report.as_text(stopwatch.table())}\n")
    _progress(f"The run took {run.minutes:.1f} minutes.")
    text = "\n\n".join(_report.as_text(table) for table in tables)
    notes = _document.kept_notes(args.output or PAGE)
    return text, _document.render(run, tables, notes)


class _Runner:
    """Runs every round of the workers, then of the producers, of some hosts."""

    def __init__(
        self,
        mode: Mode,
        setups: Sequence[str],
        skipped: Mapping[str, Mapping[str, str]],
        sink: TelemetrySink,
        redis_url: str,
        stopwatch: Stopwatch,
    ) -> None:
        self.mode = mode
        self.setups = setups
        self.skipped = skipped
        self.sink = sink
        self.redis_url = redis_url
        self.stopwatch = stopwatch

    def workers(self, hosts: Sequence[Host]) -> list[WorkerSample]:
        """Run every worker type with every setup, round after round."""
        mode, samples = self.mode, []
        for number in range(1, mode.rounds + 1):
            for host in hosts:
                chosen = _chosen(host, self.setups, self.skipped[host.HOST])
                for worker in host.WORKER_LABELS:
                    jobs = _jobs(mode, host, worker)
                    part = f"{host.HOST} {host.WORKER_LABELS[worker]}"
                    for setup in _rotated(chosen, number):
                        with self.stopwatch.timing(part) as timing:
                            sample = host.run_worker(
                                worker, setup, jobs, number, self.sink, self.redis_url
                            )
                            timing.measured += sample.seconds
                        _progress(
                            f"round {number}/{mode.rounds} {host.HOST} {worker} "
                            f"{setup}: {sample.throughput:,.0f} jobs/s, "
                            f"{sample.cpu_us_per_job:,.0f} µs CPU/job"
                        )
                        samples.append(sample)
        return samples

    def producers(self, hosts: Sequence[Host]) -> list[ProducerSample]:
        """Run every host's producer with every setup, round after round."""
        mode, samples = self.mode, []
        for number in range(1, mode.rounds + 1):
            for host in hosts:
                chosen = _chosen(host, self.setups, self.skipped[host.HOST])
                for setup in _rotated(chosen, number):
                    with self.stopwatch.timing(f"{host.HOST} producer") as timing:
                        sample = host.run_producer(
                            setup, mode.calls, mode.warmup, number, self.sink,
                            self.redis_url,
                        )  # fmt: skip
                        timing.measured += sample.wall_seconds
                    _progress(
                        f"round {number}/{mode.rounds} {host.HOST} producer {setup}: "
                        f"{sample.wall_us_per_call:,.0f} µs/enqueue, "
                        f"{sample.cpu_us_per_call:,.0f} µs CPU/enqueue"
                    )
                    samples.append(sample)
        return samples


def _jobs(mode: Mode, host: Host, worker: str) -> int:
    return max(1, round(mode.jobs * host.JOBS_SHARE.get(worker, 1.0)))


def _chosen(
    host: Host, setups: Sequence[str], skipped: Mapping[str, str] | None = None
) -> list[str]:
    # The uninstrumented setup always runs: every overhead is relative to it.
    return [
        s
        for s in host.SETUP_LABELS
        if (s == BASELINE or not setups or s in setups) and s not in (skipped or {})
    ]


def _setups_on_no_host(setups: Sequence[str], host_names: Sequence[str]) -> list[str]:
    hosts = [host for host in HOSTS if not host_names or host.HOST in host_names]
    return [s for s in setups if not any(s in host.SETUP_LABELS for host in hosts)]


def _rotated(items: list[str], number: int) -> list[str]:
    # A different setup goes first in each round, so none always runs on a
    # cold cache or right after the heaviest one.
    shift = (number - 1) % len(items)
    return items[shift:] + items[:shift]


def _check_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        raise BenchmarkError(
            f"Redis at {redis_url} failed a PING ({error}); start Redis with "
            "`redis-server --bind 127.0.0.1 --port 6379` or choose another "
            "--redis-db"
        ) from error
    finally:
        client.close()


def _command(argv: Sequence[str]) -> str:
    arguments = " ".join(argv)
    if os.environ.get("NOX_CURRENT_SESSION") == "bench":
        return f"nox -s bench -- {arguments}" if arguments else "nox -s bench"
    return f"python -m benchmarks.run {arguments}".rstrip()


def _describe(
    mode: Mode, hosts: Sequence[Host], setups: Sequence[str], with_budget: bool
) -> str:
    fewer = [
        f"{host.HOST} {host.WORKER_LABELS[worker]} {_jobs(mode, host, worker):,}"
        for host in hosts
        for worker in host.JOBS_SHARE
    ]
    exceptions = f", but {' and '.join(fewer)}" if fewer else ""
    budget_sizes = f"; {mode.budget.describe()}" if with_budget else ""
    chosen = f" ({', '.join(setups)} and uninstrumented)" if setups else ""
    return (
        f"{mode.name} mode{chosen}: {mode.rounds} "
        f"round{'s' if mode.rounds > 1 else ''}; "
        f"each worker drains {mode.jobs:,} no-op jobs per round{exceptions}, "
        f"each producer times {mode.calls:,} enqueues after {mode.warmup:,} "
        f"untimed ones{budget_sizes}"
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _setup_list(text: str) -> list[str]:
    return _names(text, "setup", SETUP_CHOICES)


def _host_list(text: str) -> list[str]:
    return _names(text, "host", HOST_CHOICES)


def _names(text: str, kind: str, choices: Sequence[str]) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in choices]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {kind} {', '.join(unknown)}; expected {', '.join(choices)}"
        )
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure jobtrace's overhead per job against the alternatives.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short round of jobtrace alone (unless --setups names more) "
        "and smaller span budget figures, about a minute",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave BENCHMARKS.md"
    )
    parser.add_argument(
        "--no-budget", action="store_true",
        help="leave out the span budget figures, which need no Redis",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path,
        help="the Markdown file to rewrite (default: BENCHMARKS.md, and none "
        "with --quick)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=_positive, help="rounds per setup")
    parser.add_argument(
        "--jobs", type=_positive,
        help="jobs per worker round; RQ's and Dramatiq's workers drain a share",
    )  # fmt: skip
    parser.add_argument("--calls", type=_positive, help="timed enqueues per round")
    parser.add_argument(
        "--host", type=_host_list, default=[],
        help="comma-separated job systems to measure "
        f"({', '.join(HOST_CHOICES)}; default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--setups", type=_setup_list, default=[],
        help="comma-separated setups to run beside the uninstrumented one "
        f"({', '.join(SETUP_CHOICES)}; default: all, or jobtrace alone with "
        "--quick)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-db", type=int, default=12,
        help="the database number on 127.0.0.1:6379 to use (default: 12)",
    )  # fmt: skip
    return parser


if __name__ == "__main__":
    sys.exit(main())
