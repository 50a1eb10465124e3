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
  fresh queue in Redis, and only then the worker subprocess starts. The start
  marker records the time and the CPU time (user plus system) of the worker's
  whole process tree, and the end marker first flushes the setup's exporter,
  then records the same. Jobs/s and CPU µs/job cover the jobs between the
  markers, export included, start-up and shutdown excluded.
- **Celery workers** run as `celery worker` (`--without-heartbeat
  --without-gossip --without-mingle`, remote control off) and are killed
  after the end marker.
- **RQ workers** run as `rq worker --burst` and exit by themselves once the
  queue is empty. Their worker classes leave out RQ's command listener, whose
  pubsub thread can delay a worker's exit by 60 s with redis-py 8.2. The
  forking `Worker` runs each job in a new work horse, whose CPU time counts
  once the worker has reaped it (to one clock tick per reading). The forking
  Worker records both markers in its own process. It records the start
  marker once that marker's horse has exited, and the end marker before
  that marker's horse starts, after a flush of the worker's exporter. So its
  figures cover the measured jobs only, including the export of spans that
  horses hand over to the worker. RQ workers run fewer jobs per second than
  Celery's, so they drain fewer jobs per round, as the description of the
  run above lists.
- **Dramatiq workers** run as `dramatiq benchmarks.dramatiq_app --processes 1
  --threads 1` on a RedisBroker with Dramatiq's default middleware (without
  Prometheus), and are killed after the end marker. With one thread the
  broker's consumer prefetches 2 messages and, while both are
  unacknowledged, sleeps 5 to 10 ms before fetching again. So the
  uninstrumented worker runs about 250 no-op jobs/s although each job takes
  under 1 ms of CPU. Its throughput is bound by that wait more than by CPU,
  so the extra CPU per job is the better measure of a setup's cost. It
  drains half of a round's jobs.
- **Overheads are paired.** A round runs every setup back to back, and each
  ratio or extra cost is computed against the same round's uninstrumented
  run before the median over rounds is taken. Cells read
  `median (lowest to highest round)`.
- **Delivered** is the lowest share, over rounds, of jobs (or enqueues) whose
  span or Sentry transaction reached the benchmark's loopback HTTP server.
  Every exporter sends there; nothing leaves the machine. sentry-sdk drops
  transactions when its transport queue (100 items by default) is full, so
  below 100% its figures leave out the cost of sending the dropped ones. For
  RQ the count is of spans of kind CONSUMER per job (PRODUCER per enqueue),
  taken after the burst worker has exited, and includes the two marker jobs.
  For Dramatiq it is the same count, taken after the end marker's flush, and
  includes the start marker.
- **Setups.** jobtrace: `jobtrace_celery.instrument()` in the app module.
  opentelemetry-instrumentation-celery: an SDK `TracerProvider` with
  `BatchSpanProcessor` and the OTLP/HTTP exporter, set up with
  `CeleryInstrumentor().instrument()` in `worker_process_init`, as its
  documentation requires for the prefork pool. sentry-sdk:
  `sentry_sdk.init(traces_sample_rate=1.0, integrations=[CeleryIntegration()])`
  in `celeryd_init`, as Sentry's Celery guide shows, with the integrations it
  enables by default (RedisIntegration among them). SDK batch and queue
  settings are left at their defaults. The app is `benchmarks/celery_app.py`.
- **RQ setups** are made in the settings module that `rq worker -c` loads,
  `benchmarks/rq_app.py`, before the first fork. jobtrace calls
  `jobtrace_rq.instrument()`. opentelemetry-instrumentation-rq calls
  `RQInstrumentor().instrument()`, with the same SDK provider, processor and
  exporter as for Celery. sentry-sdk calls
  `sentry_sdk.init(traces_sample_rate=1.0, integrations=[RqIntegration()])`,
  as Sentry's RQ guide shows. A setup that does not install, or whose setup
  raises with the installed RQ, is listed with the reason instead of figures.
- **Dramatiq setups** are made in the broker module,
  `benchmarks/dramatiq_app.py`, which each worker process imports. jobtrace
  calls `jobtrace_dramatiq.instrument()` after `dramatiq.set_broker()`.
  sentry-sdk calls
  `sentry_sdk.init(traces_sample_rate=1.0, integrations=[DramatiqIntegration()])`
  before the broker is built, because the integration adds its middleware in
  a patched `Broker.__init__`, as its docstring states. Sentry's Dramatiq
  guide shows the same call without `traces_sample_rate` and states that the
  integration reports errors only, but the sentry-sdk listed above starts a
  transaction per message once tracing is on, and Delivered counts those.
  opentelemetry-python-contrib has no Dramatiq instrumentation.
- **Cost of delivering the horse's spans.** RQ ends each work horse of its
  forking `Worker` with `os._exit`, so a setup must export the horse's spans
  or hand them to the worker before then. The extra ms and CPU µs per job
  against the same round's uninstrumented forking Worker are that cost,
  span recording included. The column "beyond SimpleWorker's" subtracts the
  same setup's extra CPU per job on SimpleWorker in the same round, which
  leaves the cost of getting the spans out of each horse.
- **Producer side.** A fresh process per setup and round makes the warm-up
  enqueues (`delay()` for Celery, `Queue.enqueue()` for RQ, `send()` for
  Dramatiq), then times the measured ones and a final flush of the exporter
  with `time.perf_counter()` (wall) and `time.process_time()` (CPU of all
  its threads). The enqueues run outside any span or transaction, so
  sentry-sdk records no span for them and only adds its trace headers
  (Celery, Dramatiq) or nothing (RQ).
- **Targets.** jobtrace's extra worker CPU per job and extra time and CPU per
  enqueue stay at most half of opentelemetry-instrumentation-celery's,
  measured on the same Celery pool, on Celery prefork for RQ's SimpleWorker
  and Dramatiq's worker, and on Celery's producer for RQ's and Dramatiq's
  producers. Throughput stays at least 0.96
  of the uninstrumented worker's, and 0.90 on RQ's forking Worker, which must
  also deliver every span. A target whose reference did not run is not measured.
- **Span budget.** `benchmarks/budget.py` runs in the benchmark's own
  process after the workers and producers, with no Redis and no collector.
  Pruning feeds one trace's span starts and ends straight to the budget
  processor (default budget of 2,048 spans, partial flush every 300 spans).
  The cost per span makes traces with the SDK's tracer and counts the
  process's CPU time until a flush has exported them, through the SDK's
  `BatchSpanProcessor` alone or with jobtrace's processors in front of it.
  The exporter either encodes each batch as OTLP/protobuf and drops the
  bytes, or drops the batch as it is. A round measures every case once, and
  the extra cost is against the same round's batch processor alone, on the
  same exporter and traces. The memory job makes its trace, 3 levels deep,
  in a fresh process, whose peak resident set size (`VmHWM`) is reset just
  before it. The description of the run above gives the sizes. Quick mode
  uses smaller traces and a smaller job.
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
