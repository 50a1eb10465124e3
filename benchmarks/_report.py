"""Tables of a benchmark run, as plain text for the terminal and as Markdown."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from benchmarks._samples import (
    BASELINE,
    ProducerSample,
    SampleT,
    Spread,
    WorkerSample,
    difference,
    paired,
    ratio,
    spread,
)

#: jobtrace's targets: worker throughput at least this share of the
#: uninstrumented worker's, and each overhead at most this share of
#: opentelemetry-instrumentation-celery's.
MIN_THROUGHPUT_RATIO = 0.96
MAX_SHARE_OF_OTEL = 0.5
JOBTRACE = "jobtrace"
OTEL = "otel"
SIGNED = "{:+,.0f}"

#: Display names per host, for setup keys and worker keys alike.
Labels = Mapping[str, Mapping[str, str]]


@dataclasses.dataclass(frozen=True)
class Table:
    """A titled table of preformatted cells."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def worker_table(samples: Sequence[WorkerSample], labels: Labels) -> Table:
    """Summarise worker rounds per host, worker type and setup."""
    headers = (
        "Worker", "Setup", "Jobs/s", "Ratio to uninstrumented",
        "CPU µs/job", "Extra CPU µs/job", "Delivered",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for (host, worker), group in _groups(samples, _worker_key).items():
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
    return Table("Worker side", headers, rows)


def producer_table(samples: Sequence[ProducerSample], labels: Labels) -> Table:
    """Summarise producer rounds per host and setup."""
    headers = (
        "Host", "Setup", "µs/enqueue", "Extra µs/enqueue",
        "CPU µs/enqueue", "Extra CPU µs/enqueue", "Delivered",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for (host,), group in _groups(samples, _producer_key).items():
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
    return Table("Producer side", headers, rows)


def target_table(
    workers: Sequence[WorkerSample],
    producers: Sequence[ProducerSample],
    labels: Labels,
) -> Table:
    """Compare jobtrace's medians with the targets, where both setups ran."""
    rows: list[tuple[str, ...]] = []
    for (host, worker), group in _groups(workers, _worker_key).items():
        base = group.get(BASELINE, [])
        mine = paired(group.get(JOBTRACE, []), base, _throughput, ratio)
        if mine is not None:
            rows.append(
                (
                    f"{host} {labels[host].get(worker, worker)}: throughput ratio"
                    f" ≥ {MIN_THROUGHPUT_RATIO}",
                    f"{mine.median:.2f}",
                    _verdict(mine.median >= MIN_THROUGHPUT_RATIO),
                )
            )
        name = f"{host} {labels[host].get(worker, worker)}: extra worker CPU"
        rows.extend(_share_row(name, labels[host], group, _cpu_per_job))
    for (host,), enqueues in _groups(producers, _producer_key).items():
        for measure, value in (("time", _wall_per_call), ("CPU", _cpu_per_call)):
            name = f"{host} producer: extra {measure}"
            rows.extend(_share_row(name, labels[host], enqueues, value))
    return Table("Targets", ("Target", "Measured (median)", "Result"), rows)


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


def _share_row(
    name: str,
    labels: Mapping[str, str],
    group: Mapping[str, Sequence[SampleT]],
    value: Callable[[SampleT], float],
) -> list[tuple[str, ...]]:
    base = group.get(BASELINE, [])
    mine = paired(group.get(JOBTRACE, []), base, value, difference)
    theirs = paired(group.get(OTEL, []), base, value, difference)
    if mine is None or theirs is None:
        return []
    limit = MAX_SHARE_OF_OTEL * theirs.median
    return [
        (
            f"{name} ≤ half of {labels.get(OTEL, OTEL)}'s",
            f"{mine.median:+,.0f} µs, limit {limit:+,.0f} µs",
            _verdict(mine.median <= limit),
        )
    ]


def _groups(
    samples: Sequence[SampleT], key: Callable[[SampleT], tuple[str, ...]]
) -> dict[tuple[str, ...], dict[str, list[SampleT]]]:
    groups: dict[tuple[str, ...], dict[str, list[SampleT]]] = {}
    for sample in samples:
        setups = groups.setdefault(key(sample), {})
        setups.setdefault(sample.setup, []).append(sample)
    return groups


def _number(value: Spread | None, style: str = "{:,.0f}") -> str:
    if value is None:
        return "-"
    median, low, high = (style.format(x) for x in (value.median, value.low, value.high))
    return f"{median} ({low} to {high})"


def _delivered(runs: Sequence[WorkerSample] | Sequence[ProducerSample]) -> str:
    shares = [run.delivered for run in runs if run.delivered is not None]
    return f"{min(shares):.1%}" if shares else "-"


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _worker_key(sample: WorkerSample) -> tuple[str, ...]:
    return (sample.host, sample.worker)


def _producer_key(sample: ProducerSample) -> tuple[str, ...]:
    return (sample.host,)


def _throughput(sample: WorkerSample) -> float:
    return sample.throughput


def _cpu_per_job(sample: WorkerSample) -> float:
    return sample.cpu_us_per_job


def _wall_per_call(sample: ProducerSample) -> float:
    return sample.wall_us_per_call


def _cpu_per_call(sample: ProducerSample) -> float:
    return sample.cpu_us_per_call
