"""Tables of a benchmark run, as plain text for the terminal and as Markdown."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from benchmarks._samples import (
    BASELINE,
    ProducerSample,
    Spread,
    WorkerSample,
    difference,
    group_samples,
    paired,
    producer_key,
    ratio,
    spread,
    worker_key,
)

SIGNED = "{:+,.0f}"

#: Display names per host, for setup keys and worker keys alike.
Labels = Mapping[str, Mapping[str, str]]
#: Per host, the setups that did not run, each with the reason.
Skipped = Mapping[str, Mapping[str, str]]
#: Per host, each worker that forks a process per job, mapped to the worker
#: of the same host that runs jobs in its own process.
Forking = Mapping[str, Mapping[str, str]]


@dataclasses.dataclass(frozen=True)
class Table:
    """A titled table of preformatted cells."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def worker_table(
    samples: Sequence[WorkerSample], labels: Labels, skipped: Skipped
) -> Table:
    """Summarise worker rounds per host, worker type and setup."""
    headers = (
        "Worker", "Setup", "Jobs/s", "Ratio to uninstrumented",
        "CPU µs/job", "Extra CPU µs/job", "Delivered",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for (host, worker), group in group_samples(samples, worker_key).items():
        base = group.get(BASELINE, [])
        for setup, runs in group.items():
            compared = base if setup != BASELINE else []
            rows.append(
                (
                    f"{host} {labels[host].get(worker, worker)}",
                    labels[host].get(setup, setup),
                    _number(spread(runs, _throughput)),
                    _number(paired(runs, compared, _throughput, ratio), "{:.2f}"),
                    _number(spread(runs, _cpu_per_job)),
                    _number(paired(runs, compared, _cpu_per_job, difference), SIGNED),
                    _delivered(runs),
                )
            )
        name = f"{host} {labels[host].get(worker, worker)}"
        rows.extend(_skipped_rows(name, labels[host], skipped.get(host, {}), headers))
    return Table("Worker side", headers, rows)


def producer_table(
    samples: Sequence[ProducerSample], labels: Labels, skipped: Skipped
) -> Table:
    """Summarise producer rounds per host and setup."""
    headers = (
        "Host", "Setup", "µs/enqueue", "Extra µs/enqueue",
        "CPU µs/enqueue", "Extra CPU µs/enqueue", "Delivered",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for (host,), group in group_samples(samples, producer_key).items():
        base = group.get(BASELINE, [])
        for setup, runs in group.items():
            compared = base if setup != BASELINE else []
            rows.append(
                (
                    host,
                    labels[host].get(setup, setup),
                    _number(spread(runs, _wall_per_call)),
                    _number(paired(runs, compared, _wall_per_call, difference), SIGNED),
                    _number(spread(runs, _cpu_per_call)),
                    _number(paired(runs, compared, _cpu_per_call, difference), SIGNED),
                    _delivered(runs),
                )
            )
        rows.extend(_skipped_rows(host, labels[host], skipped.get(host, {}), headers))
    return Table("Producer side", headers, rows)


def horse_tables(
    samples: Sequence[WorkerSample], labels: Labels, forking: Forking
) -> list[Table]:
    """Show what a worker that forks per job pays to deliver each horse's spans.

    Its work horse exits after one job, so a setup must export the horse's
    spans or hand them to the worker before the horse exits. The extra
    time and CPU per job against the same round's uninstrumented forking
    worker are that cost, span recording included. The last column
    subtracts what the same setup adds on the in-process worker in the same
    round, which leaves the cost of getting the spans out of each horse.
    """
    groups = group_samples(samples, worker_key)
    tables = []
    for host, workers in forking.items():
        for worker, in_process in workers.items():
            group = groups.get((host, worker))
            if group is not None:
                tables.append(
                    _horse_table(
                        f"{host} {labels[host].get(worker, worker)}",
                        labels[host],
                        group,
                        groups.get((host, in_process), {}),
                        labels[host].get(in_process, in_process),
                    )
                )
    return tables


def as_text(table: Table) -> str:
    """Render ``table`` with aligned columns for a terminal."""
    cells = [table.headers, *table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.headers))]
    lines = [table.title]
    for number, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def as_markdown(table: Table) -> str:
    """Render ``table`` as a Markdown table without its title."""
    lines = [
        "| " + " | ".join(table.headers) + " |",
        "|" + "---|" * len(table.headers),
        *("| " + " | ".join(row) + " |" for row in table.rows),
    ]
    return "\n".join(lines)


def _horse_table(
    name: str,
    labels: Mapping[str, str],
    group: Mapping[str, Sequence[WorkerSample]],
    in_process: Mapping[str, Sequence[WorkerSample]],
    in_process_name: str,
) -> Table:
    headers = (
        "Setup", "ms/job", "Extra ms/job", "Ratio to uninstrumented",
        "Extra CPU µs/job", f"Extra CPU µs/job beyond {in_process_name}'s",
        "Delivered",
    )  # fmt: skip
    base = group.get(BASELINE, [])
    rows: list[tuple[str, ...]] = []
    for setup, runs in group.items():
        compared = base if setup != BASELINE else []
        rows.append(
            (
                labels.get(setup, setup),
                _number(spread(runs, _ms_per_job), "{:,.2f}"),
                _number(paired(runs, compared, _ms_per_job, difference), "{:+,.2f}"),
                _number(paired(runs, compared, _throughput, ratio), "{:.2f}"),
                _number(paired(runs, compared, _cpu_per_job, difference), SIGNED),
                _number(_beyond(runs, base, in_process, setup), SIGNED),
                _delivered(runs),
            )
        )
    return Table(f"{name}: cost of delivering the horse's spans", headers, rows)


def _beyond(
    runs: Sequence[WorkerSample],
    base: Sequence[WorkerSample],
    in_process: Mapping[str, Sequence[WorkerSample]],
    setup: str,
) -> Spread | None:
    # Per round: the setup's extra CPU per job on the forking worker minus
    # its extra CPU per job on the in-process worker.
    if setup == BASELINE:
        return None
    extra_there = _by_round(
        in_process.get(setup, []), in_process.get(BASELINE, []), _cpu_per_job
    )
    extra_here = _by_round(runs, base, _cpu_per_job)
    values = [
        extra_here[number] - extra_there[number]
        for number in extra_here
        if number in extra_there
    ]
    return Spread.of(values) if values else None


def _by_round(
    samples: Sequence[WorkerSample],
    baseline: Sequence[WorkerSample],
    value: Callable[[WorkerSample], float],
) -> dict[int, float]:
    base_by_round = {base.round: value(base) for base in baseline}
    return {
        sample.round: value(sample) - base_by_round[sample.round]
        for sample in samples
        if sample.round in base_by_round
    }


def _skipped_rows(
    name: str,
    labels: Mapping[str, str],
    skipped: Mapping[str, str],
    headers: tuple[str, ...],
) -> list[tuple[str, ...]]:
    # The reason goes in the first column of figures; the rest stay empty.
    blanks = ("-",) * (len(headers) - 3)
    return [
        (name, labels.get(setup, setup), reason, *blanks)
        for setup, reason in skipped.items()
    ]


def _number(value: Spread | None, style: str = "{:,.0f}") -> str:
    if value is None:
        return "-"
    median, low, high = (style.format(x) for x in (value.median, value.low, value.high))
    return f"{median} ({low} to {high})"


def _delivered(runs: Sequence[WorkerSample] | Sequence[ProducerSample]) -> str:
    shares = [run.delivered for run in runs if run.delivered is not None]
    return f"{min(shares):.1%}" if shares else "-"


def _throughput(sample: WorkerSample) -> float:
    return sample.throughput


def _ms_per_job(sample: WorkerSample) -> float:
    return sample.seconds / sample.jobs * 1e3


def _cpu_per_job(sample: WorkerSample) -> float:
    return sample.cpu_us_per_job


def _wall_per_call(sample: ProducerSample) -> float:
    return sample.wall_us_per_call


def _cpu_per_call(sample: ProducerSample) -> float:
    return sample.cpu_us_per_call
