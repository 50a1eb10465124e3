"""jobtrace shares a Celery worker with other tracers without harm.

The producer and the worker each run opentelemetry-instrumentation-celery
and sentry-sdk's Celery integration beside jobtrace. Sentry sends its
events to a sink on 127.0.0.1 that this test starts. Jobs must behave as
without any tracer, each tracer's headers must arrive as it wrote them,
and jobtrace must warn once per other tracer.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtrace._receiver import OtlpReceiver
from tests.celery import workers as celery_workers

from .hosts import WAIT, CeleryHost

pytestmark = pytest.mark.integration

pytest.importorskip("opentelemetry.instrumentation.celery")
pytest.importorskip("sentry_sdk")

PRODUCER = """
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import jobtrace, jobtrace_celery
jobtrace_celery.instrument()
from opentelemetry.instrumentation.celery import CeleryInstrumentor
CeleryInstrumentor().instrument()
import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
sentry_sdk.init(dsn=os.environ["TEST_SENTRY_DSN"], traces_sample_rate=1.0,
                integrations=[CeleryIntegration()])
from celery import Celery
app = Celery("producer", broker=sys.argv[1], backend=sys.argv[2])
app.conf.task_default_queue = sys.argv[3]
with sentry_sdk.start_transaction(name="enqueue"):
    seen = app.send_task("it.headers")
    added = app.send_task("it.add", args=(2, 3))
    failed = app.send_task("it.fail")
    flaky = app.send_task("it.flaky")
error = failed.get(timeout=60, propagate=False)
print(json.dumps({
    "ids": {"headers": seen.id, "add": added.id},
    "headers": seen.get(timeout=60),
    "add": added.get(timeout=60),
    "fail": [type(error).__name__, list(error.args)],
    "flaky": flaky.get(timeout=60),
}))
jobtrace.shutdown()
sentry_sdk.flush(5)
"""

OTHER_TRACERS = ("opentelemetry-instrumentation-celery", "sentry-sdk")


class _SentrySink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sentry_dsn() -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """A Sentry DSN that points at a sink on 127.0.0.1 that accepts anything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SentrySink)
    server.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://public@127.0.0.1:{server.server_address[1]}/1", server
    server.shutdown()
    server.server_close()


def _warnings(text: str, name: str) -> list[str]:
    return re.findall(rf"{re.escape(name)} also traces Celery", text)


def test_other_tracers_left_intact(
    redis_url: str,
    receiver: OtlpReceiver,
    sentry_dsn: tuple[str, http.server.ThreadingHTTPServer],
    tmp_path: Path,
) -> None:
    """Jobs are unchanged, no tracer's header is overwritten, one warning each."""
    dsn, sink = sentry_dsn
    host = CeleryHost(redis_url)
    env = {"TEST_OTHER_TRACERS": "opentelemetry,sentry", "TEST_SENTRY_DSN": dsn}
    with host.worker(receiver, tmp_path / "worker.log", env) as worker:
        queue = host.app.conf.task_default_queue
        producer_env = celery_workers.worker_env(receiver, redis_url, queue)
        producer_env.update(env)
        produced = subprocess.run(
            [
                sys.executable,
                "-c",
                PRODUCER,
                redis_url,
                producer_env["TEST_RESULT_BACKEND"],
                queue,
            ],
            env=producer_env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert produced.returncode == 0, produced.stderr
        worker.stop()
        worker_log = worker.log_text()

    result = json.loads(produced.stdout.splitlines()[-1])
    headers = result["headers"]
    spans = receiver.spans()
    by_id = {span.span_id: span for span in spans}
    own_send = next(s for s in spans if s.name == "send it.headers")
    own_run = next(
        s
        for s in spans
        if s.name == "process it.headers"
        and s.attributes.get("messaging.message.id") == result["ids"]["headers"]
    )
    otel_parent = by_id.get(headers["traceparent"].split("-")[2])

    assert result["add"] == 5
    assert result["fail"] == ["ValueError", ["boom"]]
    assert result["flaky"] == "done"
    assert headers["jobtrace_traceparent"].split("-")[2] == own_send.span_id
    assert otel_parent is not None
    assert otel_parent.name.startswith("apply_async")
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9a-f]{16}(-[01])?", headers["sentry-trace"])
    assert "sentry-trace_id=" in headers["baggage"]
    assert [(t, s) for t, s, _ in own_run.links] == [
        (own_send.trace_id, own_send.span_id)
    ]
    assert sink.requests > 0  # type: ignore[attr-defined]
    for name in OTHER_TRACERS:
        assert len(_warnings(worker_log, name)) == 1, name
        assert len(_warnings(produced.stderr, name)) == 1, name
