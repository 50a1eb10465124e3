"""The worker and producer rounds that every host shares.

A worker round enqueues a start marker, the no-op jobs and an end marker,
then starts the worker. The marker jobs write the time and the CPU time of
the worker's process tree to a Redis key (see the hosts' app modules), and
:func:`drained` reads both keys, so start-up and shutdown stay out of the
figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from benchmarks import _process
from benchmarks._samples import ProducerSample
from benchmarks._sink import TelemetrySink

#: Seconds a worker gets from its start to its first job.
STARTUP_TIMEOUT = 60.0
#: Seconds to wait for telemetry that a flush has already sent.
DELIVERY_TIMEOUT = 3.0
#: Prefixes of the caller's environment variables that every setup leaves
#: out, so that settings from the shell cannot change what is measured.
IGNORED_PREFIXES = ("OTEL_", "SENTRY_", "JOBTRACE_", "BENCH_")


@dataclasses.dataclass
class Drained:
    """A worker that drained its round, still running until the block ends.

    ``seconds`` and ``cpu_seconds`` run from the start marker to the end
    marker.
    """

    process: subprocess.Popen[bytes]
    log: Path
    seconds: float
    cpu_seconds: float


def new_queue() -> str:
    """Return a queue name that no other round uses."""
    return f"bench-{uuid.uuid4().hex[:12]}"


def marker_keys(queue: str) -> tuple[str, str]:
    """Return the Redis keys of the start and the end marker of ``queue``."""
    return f"{queue}:start", f"{queue}:end"


@contextmanager
def drained(
    command: list[str],
    env: dict[str, str],
    store: redis.Redis,
    queue: str,
    *,
    timeout: float,
    description: str,
) -> Iterator[Drained]:
    """Run a worker until it has recorded both markers of ``queue``.

    ``timeout`` is the seconds from the start marker to the end marker. The
    worker is killed when the block ends, and its log is removed unless
    the block raised.

    Raises:
        BenchmarkError: the worker exited or timed out before a marker.
    """
    start_key, end_key = marker_keys(queue)
    log = Path(tempfile.gettempdir()) / f"jobtrace-{queue}.log"
    with _process.running(command, env, log) as process:
        start = _process.wait_for(
            lambda: _marker(store, start_key),
            process,
            timeout=STARTUP_TIMEOUT,
            description=f"{description}: waiting for its first job",
            log=log,
        )
        end = _process.wait_for(
            lambda: _marker(store, end_key),
            process,
            timeout=timeout,
            description=f"{description}: waiting for its last job",
            log=log,
            interval=0.05,
        )
        yield Drained(
            process=process,
            log=log,
            seconds=end["time"] - start["time"],
            cpu_seconds=end["cpu"] - start["cpu"],
        )
    log.unlink(missing_ok=True)


def run_producer(
    host: str,
    module: str,
    setup: str,
    calls: int,
    warmup: int,
    round_number: int,
    sink: TelemetrySink,
    redis_url: str,
    *,
    environment: Callable[[str, str, TelemetrySink, str], dict[str, str]],
    delete_keys: Callable[[redis.Redis, str], None],
    sent: str | None,
    seconds_per_call: float,
) -> ProducerSample:
    """Time ``calls`` enqueues of ``python -m module`` after ``warmup`` ones.

    ``environment`` builds the process's environment from the setup, the
    queue, the sink and the Redis URL, and ``delete_keys`` removes the
    queue's keys afterwards. ``sent`` is the sink's count that grows by one
    per enqueue, None for a setup that sends nothing per enqueue.
    """
    queue = new_queue()
    store = redis.Redis.from_url(redis_url)
    command = [
        sys.executable, "-m", module, "--calls", str(calls), "--warmup", str(warmup),
    ]  # fmt: skip
    timeout = 60 + (calls + warmup) * seconds_per_call
    try:
        sink.reset()
        env = environment(setup, queue, sink, redis_url)
        result = _process.run_json(command, env, timeout)
        share = delivered(sink, sent, calls + warmup)
    finally:
        delete_keys(store, queue)
        store.close()
    return ProducerSample(
        host=host,
        setup=setup,
        round=round_number,
        calls=calls,
        wall_seconds=result["wall"],
        cpu_seconds=result["cpu"],
        delivered=share,
    )


def delivered(sink: TelemetrySink, kind: str | None, expected: int) -> float | None:
    """Return the share of ``expected`` items of ``kind`` that reached ``sink``.

    Returns None for a setup that sends no item of its own per job.
    """
    if kind is None:
        return None
    received = sink.wait_for(kind, expected, DELIVERY_TIMEOUT)
    return min(received, expected) / expected


def environment(
    setup: str,
    queue: str,
    sink: TelemetrySink,
    redis_url: str,
    ignored: Sequence[str] = (),
) -> dict[str, str]:
    """Return the environment of a worker or producer process of ``setup``.

    Variables that start with ``ignored``, or with :data:`IGNORED_PREFIXES`,
    are left out.
    """
    prefixes = (*IGNORED_PREFIXES, *ignored)
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(_process.ROOT), env.get("PYTHONPATH")])
        ),
        BENCH_SETUP=setup,
        BENCH_BROKER_URL=redis_url,
        BENCH_QUEUE=queue,
        BENCH_SENTRY_DSN=sink.sentry_dsn(),
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.otlp_endpoint,
        OTEL_SERVICE_NAME="jobtrace-bench",
    )
    return env


def _marker(store: redis.Redis, key: str) -> dict[str, float] | None:
    raw = store.get(key)
    return None if raw is None else dict(json.loads(raw))
