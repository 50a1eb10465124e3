"""BENCHMARKS.md: the results of one run, with the machine, versions and method.

The file is generated, except for whatever follows :data:`NOTES_MARKER`,
which a rewrite keeps as it is, so notes such as profiles of a missed
target survive the next run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks._report import Table, as_markdown

NOTES_MARKER = (
    "<!-- Notes below this line are kept when benchmarks/run.py rewrites the file. -->"
)

METHOD = """\
- **Worker side.** For every round, worker type and setup, an uninstrumented
  producer first enqueues a start marker, the no-op jobs and an end marker on a
  fresh queue in Redis, and only then a `celery worker` subprocess starts
  (`--without-heartbeat --without-gossip --without-mingle`, remote control
  off). The start marker records the time and the CPU time (user plus system)
  of the worker's whole process tree; the end marker first flushes the setup's
  exporter, then records the same. Jobs/s and CPU µs/job cover the jobs
  between the markers, export included, start-up and shutdown excluded.
- **Overheads are paired.** A round runs every setup back to back, and each
  ratio or extra cost is computed against the same round's uninstrumented
  run before the median over rounds is taken. Cells read
  `median (lowest to highest round)`.
- **Delivered** is the lowest share, over rounds, of jobs (or enqueues) whose
  span or Sentry transaction reached the benchmark's loopback HTTP server.
  Every exporter sends there; nothing leaves the machine. sentry-sdk drops
  transactions when its transport queue (100 items by default) is full, so
  below 100% its figures leave out the cost of sending the dropped ones.
- **Setups.** jobtrace: `jobtrace_celery.instrument()` in the app module.
  opentelemetry-instrumentation-celery: an SDK `TracerProvider` with
  `BatchSpanProcessor` and the OTLP/HTTP exporter, set up with
  `CeleryInstrumentor().instrument()` in `worker_process_init`, as its
  documentation requires for the prefork pool. sentry-sdk:
  `sentry_sdk.init(traces_sample_rate=1.0, integrations=[CeleryIntegration()])`
  in `celeryd_init`, as Sentry's Celery guide shows, with the integrations it
  enables by default (RedisIntegration among them). SDK batch and queue
  settings are left at their defaults. The app is `benchmarks/celery_app.py`.
- **Producer side.** A fresh process per setup and round makes the warm-up
  enqueues, then times the measured `delay()` calls and a final flush of the
  exporter with `time.perf_counter()` (wall) and `time.process_time()` (CPU of
  all its threads). The enqueues run outside any span or transaction, so
  sentry-sdk records no span for them and only adds its trace headers.
- **Noise.** The worker shares the machine's cores with Redis, the receiving
  HTTP server and the benchmark itself, and with anything else running. Compare
  figures within one run, and prefer a full run on an otherwise idle machine.
"""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """The command, machine, versions and load of one run."""

    command: str
    mode: str
    started: str
    minutes: float
    machine: Mapping[str, str]
    versions: Mapping[str, str]
    load_before: str
    load_after: str


def render(run: RunInfo, tables: Sequence[Table], notes: str) -> str:
    """Return the whole document; ``notes`` is the text kept after the marker."""
    parts = [
        "# Benchmarks",
        "jobtrace's overhead per job, against the instrumentations that users "
        "would pick instead. `benchmarks/run.py` wrote this page; rerun it "
        "rather than editing the figures.",
        f"Run on {run.started} with `{run.command}` ({run.mode}). "
        f"The run took {run.minutes:.1f} minutes.",
        "## Machine",
        _pairs(
            {
                **run.machine,
                "Load average before (1 / 5 / 15 min)": run.load_before,
                "Load average after": run.load_after,
            }
        ),
        "## Versions",
        _pairs(run.versions),
    ]
    for table in tables:
        parts += [f"## {table.title}", as_markdown(table)]
    parts += ["## Method", METHOD.rstrip(), NOTES_MARKER]
    text = "\n\n".join(parts) + "\n"
    return text + (notes if notes.strip() else "")


def kept_notes(path: Path) -> str:
    """Return the text after NOTES_MARKER in ``path``, or "" without one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    _, found, notes = text.partition(NOTES_MARKER + "\n")
    return notes if found else ""


def _pairs(values: Mapping[str, str]) -> str:
    rows = [f"| {name} | {value} |" for name, value in values.items()]
    return "\n".join(["| | |", "|---|---|", *rows])
