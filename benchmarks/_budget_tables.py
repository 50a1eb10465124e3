"""Tables of the span budget's figures, for the terminal and BENCHMARKS.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks._report import Table
from benchmarks._samples import Spread

if TYPE_CHECKING:
    from benchmarks.budget import Figures

#: Names of the setups and exporters of :mod:`benchmarks.budget`.
SETUP_LABELS = {
    "batch": "SDK batch processor alone",
    "jobtrace, no budget hit": "jobtrace, within the budget",
    "jobtrace, default budget": "jobtrace, default budget",
}
EXPORTER_LABELS = {"encode": "OTLP encoding", "none": "discards batches"}


def tables(figures: Figures) -> list[Table]:
    """Return the pruning, cost per span and memory tables."""
    return [_pruning(figures), _costs(figures), _memory(figures)]


def _pruning(figures: Figures) -> Table:
    spans = figures.pruned_spans
    seconds = figures.pruning
    row = (
        "one trace, default budget (2,048 spans)",
        f"{spans:,}",
        _cell(_scaled(seconds, 1e3), "{:,.0f}"),
        _cell(_scaled(seconds, 1e6 / spans), "{:.2f}"),
    )
    headers = ("Trace", "Spans", "CPU ms", "CPU µs per span")
    return Table("Span budget: pruning", headers, [row])


def _costs(figures: Figures) -> Table:
    headers = (
        "Processors", "Exporter", "Traces", "Spans per trace",
        "CPU µs per span", "Extra against the batch processor alone", "Exported",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [
        (
            SETUP_LABELS.get(cost.setup, cost.setup),
            EXPORTER_LABELS.get(cost.exporter, cost.exporter),
            f"{cost.traces:,}",
            f"{cost.spans_per_trace:,}",
            _cell(cost.us_per_span, "{:,.1f}"),
            "-" if cost.extra is None else _cell(_scaled(cost.extra, 100), "{:+.0f}%"),
            f"{cost.exported:,}",
        )
        for cost in figures.costs
    ]
    return Table("Span budget: cost per span", headers, rows)


def _memory(figures: Figures) -> Table:
    job = figures.job
    row = (
        "3 levels, default budget",
        f"{int(job['spans']):,}",
        f"{int(job['exported']):,}",
        f"{job['growth'] / 2**20:.1f} MiB",
        f"{job['seconds']:.1f}",
    )
    headers = ("Job", "Spans", "Exported", "Peak memory growth", "Seconds")
    return Table("Span budget: peak memory of one job", headers, [row])


def _scaled(value: Spread, factor: float) -> Spread:
    return Spread(value.median * factor, value.low * factor, value.high * factor)


def _cell(value: Spread, style: str) -> str:
    median, low, high = (style.format(x) for x in (value.median, value.low, value.high))
    return f"{median} ({low} to {high})"
