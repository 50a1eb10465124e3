"""Measure the span budget: pruning time, cost per span and peak memory.

``python -m benchmarks.budget`` prints three tables in Markdown:

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
turns jobtrace's metric export off. Each figure is the median of
``--rounds`` runs; the memory figure comes from one subprocess, with the
``encode`` exporter.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanContext, TraceFlags

from benchmarks import _machine
from jobtrace._budget import BudgetProcessor
from jobtrace._handoff import HandoffProcessor
from jobtrace._settings import (
    DEFAULT_MAX_SPANS_PER_TRACE,
    DEFAULT_PARTIAL_FLUSH_SECONDS,
    DEFAULT_PARTIAL_FLUSH_SPANS,
)

ROOT = Path(__file__).parents[1]
#: Fan-out per level below the root: 10 + 1,000 + 99,000 spans.
PRUNE_SHAPE = (10, 100, 99)
#: Traces within the default budget: 1 + 10 + 100 + 1,000 spans each.
SMALL_SHAPE = (10, 10, 10)
SMALL_TRACES = 60
#: The job of the memory figure: 100 + 10,000 + 1,000,000 spans.
MILLION_SHAPE = (100, 100, 100)


class EncodingExporter(SpanExporter):
    """Encodes each batch as an OTLP request and counts the spans."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class DiscardingExporter(SpanExporter):
    """Counts the spans of each batch and does nothing else with them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


EXPORTERS: dict[str, type[EncodingExporter | DiscardingExporter]] = {
    "encode": EncodingExporter,
    "none": DiscardingExporter,
}


class Discard(SpanProcessor):
    """Receives the spans the budget keeps and does nothing with them."""

    def on_end(self, span: ReadableSpan) -> None:
        pass


def span_count(shape: Sequence[int]) -> int:
    """Return the spans of a tree with these fan-outs, the root included."""
    total, level = 1, 1
    for fan_out in shape:
        level *= fan_out
        total += level
    return total


def budget(processor: SpanProcessor, max_spans: int) -> BudgetProcessor:
    """Wrap ``processor`` in a budget with the default partial flush."""
    return BudgetProcessor(
        processor,
        max_spans=max_spans,
        partial_flush_seconds=DEFAULT_PARTIAL_FLUSH_SECONDS,
        partial_flush_spans=DEFAULT_PARTIAL_FLUSH_SPANS,
    )


def pruning_events(
    shape: Sequence[int],
) -> list[tuple[SpanContext, SpanContext | None, ReadableSpan | None]]:
    """Return a trace's starts (span None) and ends, in the order a job makes them."""
    flags, empty = TraceFlags(1), Resource.get_empty()
    events: list[tuple[SpanContext, SpanContext | None, ReadableSpan | None]] = []
    next_id, now = 1, 0

    def visit(parent: SpanContext | None, depth: int) -> None:
        nonlocal next_id, now
        context = SpanContext(0xB0D6E7, next_id, False, flags)
        next_id += 1
        events.append((context, parent, None))
        start = now
        if depth < len(shape):
            for _ in range(shape[depth]):
                visit(context, depth + 1)
        now += 1000 + next_id % 7 * 100
        span = ReadableSpan(
            "span", context, parent, empty, start_time=start, end_time=now
        )
        events.append((context, parent, span))

    visit(None, 0)
    return events


def time_pruning(rounds: int) -> float:
    """Return the median CPU seconds that the budget spends on one trace."""
    events = pruning_events(PRUNE_SHAPE)
    samples = []
    for _ in range(rounds):
        processor = budget(Discard(), DEFAULT_MAX_SPANS_PER_TRACE)
        gc.collect()
        started = time.process_time()
        for context, parent, span in events:
            if span is None:
                processor.track_start(context, parent)
            else:
                processor.on_end(span)
        samples.append(time.process_time() - started)
        processor.shutdown()
    return statistics.median(samples)


def chain(setup: str, exporter: SpanExporter) -> SpanProcessor:
    """Return the processor of a setup: the SDK's alone or jobtrace's."""
    batch = BatchSpanProcessor(exporter, max_queue_size=200_000)
    if setup == "batch":
        return batch
    max_spans = 10**9 if setup == "jobtrace, no budget hit" else 2048
    return HandoffProcessor(budget(batch, max_spans))


def make_spans(provider: TracerProvider, shape: Sequence[int], traces: int) -> None:
    """Make ``traces`` traces of this shape with the SDK's tracer."""
    tracer = provider.get_tracer("benchmark")

    def visit(depth: int) -> None:
        with tracer.start_as_current_span("span"):
            if depth < len(shape):
                for _ in range(shape[depth]):
                    visit(depth + 1)

    for _ in range(traces):
        visit(0)


def cost_per_span(
    setup: str, exporting: str, shape: Sequence[int], traces: int
) -> tuple[float, int]:
    """Return CPU microseconds per span, export included, and spans exported."""
    exporter = EXPORTERS[exporting]()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(chain(setup, exporter))
    gc.collect()
    started = time.process_time()
    make_spans(provider, shape, traces)
    provider.force_flush()
    spent = time.process_time() - started
    provider.shutdown()
    return spent / (span_count(shape) * traces) * 1e6, exporter.exported


MILLION_JOB = """
import json, sys, time
from opentelemetry.sdk.trace import TracerProvider
from benchmarks.budget import EncodingExporter, MILLION_SHAPE, chain, make_spans
from benchmarks.budget import peak_bytes, reset_peak, resident_bytes, span_count

exporter = EncodingExporter()
provider = TracerProvider(shutdown_on_exit=False)
provider.add_span_processor(chain(sys.argv[1], exporter))
make_spans(provider, (2, 2, 2), 1)
reset_peak()
before = resident_bytes()
started = time.perf_counter()
make_spans(provider, MILLION_SHAPE, 1)
provider.force_flush()
seconds = time.perf_counter() - started
peak = peak_bytes()
print(json.dumps({
    "spans": span_count(MILLION_SHAPE),
    "exported": exporter.exported - span_count((2, 2, 2)),
    "growth": peak - before,
    "seconds": seconds,
}))
"""


def resident_bytes() -> int:
    """Return this process's resident set size, from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def reset_peak() -> None:
    """Start the kernel's peak resident set size afresh (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_bytes() -> int:
    """Return the peak resident set size since the last :func:`reset_peak`."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def million_span_job() -> dict[str, float]:
    """Run the 1,000,000-span job in a fresh process; return its figures."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(
        [sys.executable, "-c", MILLION_JOB, "jobtrace, default budget"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(finished.stdout)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print the tables; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure")
    args = parser.parse_args(argv)
    # The budget counts dropped spans in jobtrace's metrics, which would
    # otherwise be exported to the default OTLP endpoint.
    os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")

    print(f"Machine: {_machine.machine()}, load {_machine.load_average()}\n")
    pruned = time_pruning(args.rounds)
    spans = span_count(PRUNE_SHAPE)
    print("| Pruning | Spans | CPU ms | CPU µs per span |")
    print("|---|---|---|---|")
    print(f"| one trace, default budget | {spans:,} | {pruned * 1e3:.0f} | "
          f"{pruned / spans * 1e6:.2f} |\n")  # fmt: skip

    print("| Setup | Exporter | Traces | Spans per trace | CPU µs per span "
          "| Exported |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    baseline = 0.0
    cases = (
        ("batch", "none", SMALL_SHAPE, SMALL_TRACES),
        ("jobtrace, no budget hit", "none", SMALL_SHAPE, SMALL_TRACES),
        ("batch", "encode", SMALL_SHAPE, SMALL_TRACES),
        ("jobtrace, no budget hit", "encode", SMALL_SHAPE, SMALL_TRACES),
        ("batch", "encode", PRUNE_SHAPE, 1),
        ("jobtrace, default budget", "encode", PRUNE_SHAPE, 1),
    )
    for setup, exporting, shape, traces in cases:
        results = [
            cost_per_span(setup, exporting, shape, traces) for _ in range(args.rounds)
        ]
        cost = statistics.median(value for value, _ in results)
        exported = results[-1][1]
        extra = ""
        if setup == "batch":
            baseline = cost
        else:
            extra = f" ({(cost - baseline) / baseline:+.0%})"
        print(f"| {setup} | {exporting} | {traces} | {span_count(shape):,} | "
              f"{cost:.1f}{extra} | {exported:,} |")  # fmt: skip

    job = million_span_job()
    print("\n| Job | Spans | Exported | Peak memory growth | Seconds |")
    print("|---|---|---|---|---|")
    print(f"| 3 levels, default budget | {int(job['spans']):,} | "
          f"{int(job['exported']):,} | {job['growth'] / 2**20:.1f} MiB | "
          f"{job['seconds']:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
