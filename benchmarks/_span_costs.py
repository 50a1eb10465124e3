"""The traces, processors and timings behind :mod:`benchmarks.budget`.

``python -m benchmarks._span_costs SHAPE`` runs the memory job, one trace of
the JSON list of fan-outs SHAPE, and prints its figures as JSON.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanContext, TraceFlags

from benchmarks._process import ROOT, run_json
from benchmarks._samples import Spread
from jobtrace._budget import BudgetProcessor
from jobtrace._handoff import HandoffProcessor
from jobtrace._settings import (
    DEFAULT_MAX_SPANS_PER_TRACE,
    DEFAULT_PARTIAL_FLUSH_SECONDS,
    DEFAULT_PARTIAL_FLUSH_SPANS,
)

#: Seconds that the memory job may take. The 1,010,101-span job took about
#: 90 s on a 2-core AMD EPYC machine.
MEMORY_JOB_TIMEOUT = 600.0


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


def time_pruning(shape: Sequence[int], rounds: int) -> Spread:
    """Return the CPU seconds that the budget spends on one trace, per round."""
    events = pruning_events(shape)
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
    return Spread.of(samples)


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


def memory_job(shape: Sequence[int]) -> dict[str, float]:
    """Run a job of this shape in a fresh process and return its figures.

    Raises:
        BenchmarkError: the process failed, or timed out after
            MEMORY_JOB_TIMEOUT seconds.
    """
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", __name__, json.dumps(list(shape))]
    result: dict[str, float] = run_json(command, environ, MEMORY_JOB_TIMEOUT)
    return result


def _run_memory_job(shape: Sequence[int]) -> dict[str, float]:
    # A small trace first builds the tracer and starts the export thread,
    # so the growth is the job's own.
    exporter = EncodingExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(chain("jobtrace, default budget", exporter))
    make_spans(provider, (2, 2, 2), 1)
    reset_peak()
    before = resident_bytes()
    started = time.perf_counter()
    make_spans(provider, shape, 1)
    provider.force_flush()
    seconds = time.perf_counter() - started
    peak = peak_bytes()
    return {
        "spans": span_count(shape),
        "exported": exporter.exported - span_count((2, 2, 2)),
        "growth": peak - before,
        "seconds": seconds,
    }


if __name__ == "__main__":
    print(json.dumps(_run_memory_job(json.loads(sys.argv[1]))))
