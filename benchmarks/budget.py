"""Measure the span budget: pruning time, cost per span and peak memory.

``python -m benchmarks.run`` takes these figures in the same run as the
worker benchmark, and ``python -m benchmarks.budget`` prints them alone,
in Markdown:

- the CPU time that the budget processor spends on one 100,011-span trace
  under the default budget (2048 spans, partial flush every 300 spans),
  with spans fed to it directly;
- the CPU time per span of the SDK's tracer with its batch processor alone,
  and with jobtrace's processor (hand-off and budget) in front of it, for
  traces within the budget and for one far over it;
- the growth of peak memory while one job makes 1,000,000 spans, 3 levels
  deep, through the SDK's tracer and jobtrace's processor.

The ``encode`` exporter encodes each batch as OTLP/protobuf and discards the
bytes, so its figures include the encoding that every exported span costs
but no network. The ``none`` exporter discards batches as they are, which
shows the SDK's own cost per span. Needs no Redis and no collector, and
turns jobtrace's metric export off. Each figure is the median of the
rounds that :class:`Sizes` sets. The memory figure comes from one
subprocess, with the ``encode`` exporter. The quick sizes use smaller
traces and a smaller job.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

from benchmarks import _budget_tables, _machine
from benchmarks._report import as_markdown
from benchmarks._samples import Spread
from benchmarks._span_costs import cost_per_span, memory_job, span_count, time_pruning

#: Fan-out per level below the root: 10 + 1,000 + 99,000 spans.
PRUNE_SHAPE = (10, 100, 99)
#: Traces within the default budget: 1 + 10 + 100 + 1,000 spans each.
SMALL_SHAPE = (10, 10, 10)
#: The job of the memory figure: 100 + 10,000 + 1,000,000 spans.
MILLION_SHAPE = (100, 100, 100)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How many rounds each figure takes, and the traces it uses."""

    rounds: int
    #: The trace that is pruned, and the trace far over the budget.
    large_shape: tuple[int, ...]
    #: How many traces of SMALL_SHAPE each cost per span covers.
    small_traces: int
    #: The job of the memory figure.
    job_shape: tuple[int, ...]

    def describe(self) -> str:
        """Name the sizes, for the description of a run."""
        return (
            f"the span budget figures take the median of {self.rounds} "
            f"round{'s' if self.rounds > 1 else ''}, on a "
            f"{span_count(self.large_shape):,}-span trace, "
            f"{self.small_traces} traces of {span_count(SMALL_SHAPE):,} spans "
            f"and one job of {span_count(self.job_shape):,} spans"
        )


FULL_SIZES = Sizes(
    rounds=3, large_shape=PRUNE_SHAPE, small_traces=20, job_shape=MILLION_SHAPE
)
#: 5,011 spans in the large trace, still over twice the default budget,
#: and 11,101 in the job.
QUICK_SIZES = Sizes(
    rounds=1, large_shape=(10, 50, 9), small_traces=3, job_shape=(100, 10, 10)
)


@dataclasses.dataclass(frozen=True)
class Cost:
    """The CPU time per span of one setup, over its rounds."""

    setup: str
    exporter: str
    traces: int
    spans_per_trace: int
    us_per_span: Spread
    #: The extra CPU time per span against the SDK's batch processor alone,
    #: as a share of the latter's. It is None for the batch processor itself.
    extra: Spread | None
    exported: int


@dataclasses.dataclass(frozen=True)
class Figures:
    """Every figure of one measurement of the span budget."""

    sizes: Sizes
    #: CPU seconds of pruning one trace of ``sizes.large_shape``.
    pruning: Spread
    pruned_spans: int
    costs: list[Cost]
    #: The memory job's spans, exported spans, peak growth in bytes and seconds.
    job: dict[str, float]


#: The cases of the cost per span: the setup, the exporter, and whether the
#: trace is the large one, far over the budget, or one of SMALL_SHAPE.
COST_CASES = (
    ("batch", "none", False),
    ("jobtrace, no budget hit", "none", False),
    ("batch", "encode", False),
    ("jobtrace, no budget hit", "encode", False),
    ("batch", "encode", True),
    ("jobtrace, default budget", "encode", True),
)


def measure(sizes: Sizes, progress: Callable[[str], object] = print) -> Figures:
    """Take every figure at ``sizes``, reporting each step to ``progress``.

    Each round measures every case of the cost per span once, and the
    extra cost of a jobtrace case is computed against the same round's
    batch processor alone, on the same exporter and traces.
    """
    # The budget counts dropped spans in jobtrace's metrics, which would
    # otherwise be exported to the default OTLP endpoint.
    os.environ["OTEL_METRICS_EXPORTER"] = "none"

    pruning = time_pruning(sizes.large_shape, sizes.rounds)
    progress(f"span budget: pruning took {pruning.median * 1e3:,.0f} ms of CPU")

    values: dict[int, list[float]] = {number: [] for number in range(len(COST_CASES))}
    extras: dict[int, list[float]] = {number: [] for number in range(len(COST_CASES))}
    exported: dict[int, int] = {}
    for round_number in range(1, sizes.rounds + 1):
        alone: dict[tuple[str, bool], float] = {}
        for number, (setup, exporting, large) in enumerate(COST_CASES):
            shape, traces = _traces(sizes, large)
            cost, exported[number] = cost_per_span(setup, exporting, shape, traces)
            values[number].append(cost)
            if setup == "batch":
                alone[(exporting, large)] = cost
            else:
                base = alone[(exporting, large)]
                extras[number].append((cost - base) / base)
        progress(f"span budget: cost per span, round {round_number}/{sizes.rounds}")

    costs = []
    for number, (setup, exporting, large) in enumerate(COST_CASES):
        shape, traces = _traces(sizes, large)
        extra = Spread.of(extras[number]) if extras[number] else None
        costs.append(
            Cost(
                setup=setup,
                exporter=exporting,
                traces=traces,
                spans_per_trace=span_count(shape),
                us_per_span=Spread.of(values[number]),
                extra=extra,
                exported=exported[number],
            )
        )

    job = memory_job(sizes.job_shape)
    progress(f"span budget: the {int(job['spans']):,}-span job")
    return Figures(
        sizes=sizes,
        pruning=pruning,
        pruned_spans=span_count(sizes.large_shape),
        costs=costs,
        job=job,
    )


def _traces(sizes: Sizes, large: bool) -> tuple[tuple[int, ...], int]:
    return (sizes.large_shape, 1) if large else (SMALL_SHAPE, sizes.small_traces)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print the tables; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller traces and one round"
    )
    parser.add_argument("--rounds", type=int, help="rounds per figure")
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.rounds is not None:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)

    print(f"Machine: {_machine.machine()}, load {_machine.load_average()}\n")
    figures = measure(sizes, progress=lambda line: print(line, file=sys.stderr))
    for table in _budget_tables.tables(figures):
        print(f"{table.title}\n\n{as_markdown(table)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
