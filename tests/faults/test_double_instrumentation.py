"""jobtrace shares a worker with other tracers without harm.

For Celery, the producer and the worker each run
opentelemetry-instrumentation-celery and sentry-sdk's Celery integration
beside jobtrace. For RQ and Dramatiq they run sentry-sdk's RQ or Dramatiq
integration. Sentry sends its
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
from typing import Any

import pytest

from jobtrace._receiver import OtlpReceiver
from tests.celery import workers as celery_workers
from tests.rq import workers as rq_workers

from .hosts import WAIT, CeleryHost, DramatiqHost, RQHost

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


RQ_PRODUCER = """
import json, logging, os, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import sentry_sdk
from sentry_sdk.integrations.rq import RqIntegration
sentry_sdk.init(dsn=os.environ["TEST_SENTRY_DSN"], traces_sample_rate=1.0,
                integrations=[RqIntegration()])
import jobtrace, jobtrace_rq
jobtrace_rq.instrument()
from redis import Redis
from rq import Queue, Retry
from tests.rq import jobs
queue = Queue(sys.argv[2], connection=Redis.from_url(sys.argv[1]))
with sentry_sdk.start_transaction(name="enqueue"):
    added = queue.enqueue(jobs.add, 2, 3)
    failed = queue.enqueue(jobs.fail)
    flaky = queue.enqueue(jobs.fail_once, retry=Retry(max=1))
deadline = time.monotonic() + 60
for job in (added, failed, flaky):
    while not (job.is_finished or job.is_failed):
        assert time.monotonic() < deadline, job.id
        time.sleep(0.05)
        job.refresh()
print(json.dumps({
    "add_id": added.id,
    "add": added.return_value(),
    "fail": failed.latest_result().exc_string.strip().splitlines()[-1],
    "flaky": flaky.return_value(),
    "meta": added.meta,
}))
jobtrace.shutdown()
sentry_sdk.flush(5)
"""

DRAMATIQ_PRODUCER = """
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
sentry_sdk.init(dsn=os.environ["TEST_SENTRY_DSN"], traces_sample_rate=1.0,
                integrations=[DramatiqIntegration()])
import jobtrace, jobtrace_dramatiq
from tests.dramatiq import actors
from tests.dramatiq.workers import build_broker
broker = build_broker(os.environ["TEST_BROKER_URL"], os.environ["TEST_NAMESPACE"])
jobtrace_dramatiq.instrument(broker)
declared = actors.declare(broker, os.environ["TEST_QUEUE"])
with sentry_sdk.start_transaction(name="enqueue"):
    sent = {
        "show_options": declared.show_options.send(),
        "add": declared.add.send(2, 3),
        "fail": declared.fail.send(),
        "fail_twice": declared.fail_twice.send(),
    }
print(json.dumps({name: message.message_id for name, message in sent.items()}))
jobtrace.shutdown()
sentry_sdk.flush(5)
"""


def _run_producer(
    script: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    produced = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr
    return produced


def _host_warnings(text: str, host: str) -> list[str]:
    return re.findall(rf"sentry-sdk also traces {host}", text)


def test_rq_sentry_left_intact(
    redis_url: str,
    receiver: OtlpReceiver,
    sentry_dsn: tuple[str, http.server.ThreadingHTTPServer],
    tmp_path: Path,
) -> None:
    """RQ jobs are unchanged beside Sentry, both contexts arrive, one warning."""
    dsn, sink = sentry_dsn
    host = RQHost(redis_url)
    env = {"TEST_OTHER_TRACERS": "sentry", "TEST_SENTRY_DSN": dsn}
    with host.worker(receiver, tmp_path / "worker.log", env) as worker:
        producer_env = rq_workers.worker_env(receiver)
        producer_env.update(env)
        produced = _run_producer(
            RQ_PRODUCER, producer_env, host.rq_url, host.queue.name
        )
        result = json.loads(produced.stdout.splitlines()[-1])
        # fail_once runs twice.
        receiver.wait_for_spans(4, timeout=WAIT, name_prefix="process ")
        worker.stop()
        worker_log = worker.log_text()

    spans = receiver.spans()
    own_send = next(
        s
        for s in spans
        if s.name == "send tests.rq.jobs.add"
        and s.attributes.get("messaging.message.id") == result["add_id"]
    )
    own_run = next(
        s
        for s in spans
        if s.name == "process tests.rq.jobs.add"
        and s.attributes.get("messaging.message.id") == result["add_id"]
    )
    carrier = result["meta"]["jobtrace"]
    sentry_headers = result["meta"]["_sentry_trace_headers"]

    assert result["add"] == 5
    assert result["fail"] == "ValueError: boom"
    assert result["flaky"] == 2
    assert carrier["traceparent"].split("-")[2] == own_send.span_id
    assert [(t, s) for t, s, _ in own_run.links] == [
        (own_send.trace_id, own_send.span_id)
    ]
    assert re.fullmatch(
        r"[0-9a-f]{32}-[0-9a-f]{16}(-[01])?", sentry_headers["sentry-trace"]
    )
    assert sink.requests > 0  # type: ignore[attr-defined]
    assert len(_host_warnings(worker_log, "RQ")) == 1
    assert len(_host_warnings(produced.stderr, "RQ")) == 1


def test_dramatiq_sentry_left_intact(
    redis_url: str,
    receiver: OtlpReceiver,
    sentry_dsn: tuple[str, http.server.ThreadingHTTPServer],
    tmp_path: Path,
) -> None:
    """Dramatiq runs are unchanged beside Sentry, both contexts arrive."""
    from tests.dramatiq import workers as dramatiq_workers

    dsn, sink = sentry_dsn
    host = DramatiqHost(redis_url)
    env = {"TEST_OTHER_TRACERS": "sentry", "TEST_SENTRY_DSN": dsn}
    with host.worker(receiver, tmp_path / "worker.log", env) as worker:
        producer_env = dramatiq_workers.worker_env(receiver, host.target)
        producer_env.update(env)
        produced = _run_producer(DRAMATIQ_PRODUCER, producer_env)
        ids = json.loads(produced.stdout.splitlines()[-1])
        # fail_twice runs three times: two retries, then a success.
        receiver.wait_for_spans(6, timeout=WAIT, name_prefix="process ")
        worker.stop()
        worker_log = worker.log_text()

    spans = receiver.spans()
    runs: dict[str, list[Any]] = {}
    for span in spans:
        if span.name.startswith("process "):
            message_id = str(span.attributes.get("messaging.message.id"))
            runs.setdefault(message_id, []).append(span)

    def outcomes(name: str) -> list[str]:
        found = sorted(runs[ids[name]], key=lambda s: s.start_ns)
        return [str(s.attributes["jobtrace.job.outcome"]) for s in found]

    (shown,) = runs[ids["show_options"]]
    own_send = next(s for s in spans if s.name == "send show_options")
    assert outcomes("add") == ["success"]
    assert outcomes("fail") == ["failure"]
    assert outcomes("fail_twice") == ["retry", "retry", "success"]
    assert {"jobtrace", "_sentry_headers"} <= set(shown.attributes["test.options"])
    assert [(t, s) for t, s, _ in shown.links] == [
        (own_send.trace_id, own_send.span_id)
    ]
    assert sink.requests > 0  # type: ignore[attr-defined]
    assert len(_host_warnings(worker_log, "Dramatiq")) == 1
    assert len(_host_warnings(produced.stderr, "Dramatiq")) == 1
