"""Run Celery, RQ and Dramatiq jobs with ddtrace and jobtrace both tracing.

``tests/faults/test_ddtrace.py`` runs this module inside a fresh network
namespace, whose only interface is loopback, because ddtrace's writer and
telemetry could send to addresses that a test cannot control from Python.
The module starts its own Redis server, an OTLP receiver and a fake
Datadog agent on 127.0.0.1, runs real workers and producers, and writes
what each side received as JSON to the path given as its only argument.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobtrace._receiver import OtlpReceiver
from tests.celery import workers as celery_workers
from tests.rq import workers as rq_workers

from .hosts import WAIT, CeleryHost, DramatiqHost, RQHost

# A new network namespace has no listener at all, so Redis takes its usual
# port there, which the Celery helpers use for results.
REDIS_URL = "redis://127.0.0.1:6379/0"

#: ddtrace settings: the v0.4 payload, quick flushes, and every feature
#: that sends something other than traces turned off. Distributed tracing
#: is off by default for Celery and RQ in ddtrace 4.16, and turned on here
#: so that its headers travel too.
DATADOG_ENV = {
    "DD_TRACE_API_VERSION": "v0.4",
    "DD_TRACE_WRITER_INTERVAL_SECONDS": "0.2",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_APPSEC_ENABLED": "false",
    "DD_IAST_ENABLED": "false",
    "DD_PROFILING_ENABLED": "false",
    "DD_DATA_STREAMS_ENABLED": "false",
    "DD_RUNTIME_METRICS_ENABLED": "false",
    "DD_TRACE_STATS_COMPUTATION_ENABLED": "false",
    "DD_CRASHTRACKING_ENABLED": "false",
    "DD_DYNAMIC_INSTRUMENTATION_ENABLED": "false",
    "DD_SYMBOL_DATABASE_UPLOAD_ENABLED": "false",
    "DD_CELERY_DISTRIBUTED_TRACING": "true",
    "DD_RQ_DISTRIBUTED_TRACING_ENABLED": "true",
    "DD_SERVICE": "jobtrace-ddtrace-it",
}

CELERY_PRODUCER = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import jobtrace, jobtrace_celery
jobtrace_celery.instrument()
import ddtrace
ddtrace.patch(celery=True)
from celery import Celery
app = Celery("producer", broker=sys.argv[1], backend=sys.argv[2])
app.conf.task_default_queue = sys.argv[3]
# ddtrace 4.16 opens a publish span only for tasks in the local registry,
# and otherwise injects the active trace's context, so the sends run in one.
with ddtrace.tracer.trace("enqueue") as root:
    seen = app.send_task("it.headers")
    added = app.send_task("it.add", args=(2, 3))
    failed = app.send_task("it.fail")
    flaky = app.send_task("it.flaky")
error = failed.get(timeout=60, propagate=False)
print(json.dumps({
    "ids": {"headers": seen.id, "add": added.id, "fail": failed.id,
            "flaky": flaky.id},
    "headers": seen.get(timeout=60),
    "add": added.get(timeout=60),
    "fail": [type(error).__name__, list(error.args)],
    "flaky": flaky.get(timeout=60),
    "datadog_trace_id": f"{root.trace_id & (2**64 - 1):016x}",
}))
jobtrace.shutdown()
ddtrace.tracer.flush()
"""

RQ_PRODUCER = """
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import ddtrace
ddtrace.patch(rq=True)
import jobtrace, jobtrace_rq
jobtrace_rq.instrument()
from redis import Redis
from rq import Queue, Retry
from tests.rq import jobs
queue = Queue(sys.argv[2], connection=Redis.from_url(sys.argv[1]))
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
    "ids": {"add": added.id, "fail": failed.id, "flaky": flaky.id},
    "add": added.return_value(),
    "fail": failed.latest_result().exc_string.strip().splitlines()[-1],
    "flaky": flaky.return_value(),
    "meta": added.meta,
}))
jobtrace.shutdown()
ddtrace.tracer.flush()
"""

DRAMATIQ_PRODUCER = """
import json, logging, os
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import ddtrace
ddtrace.patch(dramatiq=True)
import jobtrace, jobtrace_dramatiq
from tests.dramatiq import actors
from tests.dramatiq.workers import build_broker
broker = build_broker(os.environ["TEST_BROKER_URL"], os.environ["TEST_NAMESPACE"])
jobtrace_dramatiq.instrument(broker)
declared = actors.declare(broker, os.environ["TEST_QUEUE"])
sent = {
    "show_options": declared.show_options.send(),
    "add": declared.add.send(2, 3),
    "fail": declared.fail.send(),
    "fail_twice": declared.fail_twice.send(),
}
print(json.dumps({"ids": {name: message.message_id for name, message in sent.items()}}))
jobtrace.shutdown()
ddtrace.tracer.flush()
"""


def _unpack(data: bytes, offset: int) -> tuple[Any, int]:
    """Decode the MessagePack value at ``offset`` and return it and the next offset.

    Only the types that ddtrace's v0.4 trace payload uses are supported:
    maps, arrays, strings, binaries, integers, floats, nil and booleans.
    """
    first = data[offset]
    offset += 1
    if first <= 0x7F:
        return first, offset
    if first >= 0xE0:
        return first - 0x100, offset
    if 0x80 <= first <= 0x8F:
        return _unpack_map(data, offset, first & 0x0F)
    if 0x90 <= first <= 0x9F:
        return _unpack_array(data, offset, first & 0x0F)
    if 0xA0 <= first <= 0xBF:
        end = offset + (first & 0x1F)
        return data[offset:end].decode(), end
    if first in (0xC0, 0xC2, 0xC3):
        return {0xC0: None, 0xC2: False, 0xC3: True}[first], offset
    sized = {
        0xC4: "B", 0xC5: ">H", 0xC6: ">I", 0xD9: "B", 0xDA: ">H", 0xDB: ">I",
        0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I",
    }  # fmt: skip
    if first in sized:
        (size,) = struct.unpack_from(sized[first], data, offset)
        offset += struct.calcsize(sized[first])
        if first in (0xDC, 0xDD):
            return _unpack_array(data, offset, size)
        if first in (0xDE, 0xDF):
            return _unpack_map(data, offset, size)
        raw = data[offset : offset + size]
        return (raw if first <= 0xC6 else raw.decode()), offset + size
    numbers = {
        0xCA: ">f", 0xCB: ">d", 0xCC: "B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
        0xD0: "b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
    }  # fmt: skip
    if first in numbers:
        (value,) = struct.unpack_from(numbers[first], data, offset)
        return value, offset + struct.calcsize(numbers[first])
    raise ValueError(f"unsupported MessagePack type byte 0x{first:02x}")


def _unpack_array(data: bytes, offset: int, size: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(size):
        item, offset = _unpack(data, offset)
        items.append(item)
    return items, offset


def _unpack_map(data: bytes, offset: int, size: int) -> tuple[dict[Any, Any], int]:
    items = {}
    for _ in range(size):
        key, offset = _unpack(data, offset)
        items[key], offset = _unpack(data, offset)
    return items, offset


@dataclasses.dataclass
class AgentRecord:
    """What the fake agent received: request paths and decoded spans."""

    paths: list[str] = dataclasses.field(default_factory=list)
    spans: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class _AgentHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that responds as a Datadog agent and records spans."""

    server: _AgentServer

    def do_GET(self) -> None:
        self._record(b"")
        if self.path == "/info":
            body = {"version": "7.60.0", "endpoints": ["/v0.4/traces"]}
            self._respond(json.dumps(body).encode())
        else:
            self._respond(b"{}")

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._record(self.rfile.read(length))
        self._respond(b'{"rate_by_service": {}}')

    do_POST = do_PUT

    def _record(self, body: bytes) -> None:
        record = self.server.record
        spans: list[dict[str, Any]] = []
        if self.path.endswith("/traces") and body:
            traces, _ = _unpack(body, 0)
            spans = [_plain_span(span) for trace in traces for span in trace]
        with record.lock:
            record.paths.append(f"{self.command} {self.path}")
            record.spans.extend(spans)

    def _respond(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _AgentServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _AgentHandler)
        self.record = AgentRecord()


def _plain_span(span: dict[str, Any]) -> dict[str, Any]:
    """Keep the fields of a ddtrace span that the test compares."""
    meta = span.get("meta") or {}
    return {
        "name": span.get("name"),
        "resource": span.get("resource"),
        # The v0.4 payload carries the lower 64 bits of a 128-bit trace id.
        "trace_id": f"{span.get('trace_id', 0):016x}",
        "span_id": f"{span.get('span_id', 0):016x}",
        "parent_id": f"{span.get('parent_id', 0):016x}",
        "error": span.get("error", 0),
        "pid": (span.get("metrics") or {}).get("process_id"),
        "meta": {
            key: value
            for key, value in meta.items()
            if key
            in ("celery.id", "job.id", "celery.state", "job.status", "actor.name")
        },
    }


@contextmanager
def fake_agent() -> Iterator[tuple[str, AgentRecord]]:
    """Run a fake Datadog agent on 127.0.0.1 and yield its URL and record."""
    server = _AgentServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.record
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def redis_server(directory: Path) -> Iterator[None]:
    """Run a Redis server without persistence on 127.0.0.1:6379."""
    command = [
        "redis-server", "--bind", "127.0.0.1", "--port", "6379",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        from redis import Redis

        client = Redis.from_url(REDIS_URL)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_agent(record: AgentRecord, names: dict[str, int]) -> None:
    """Wait until the agent has received ``names[name]`` spans of each name."""
    deadline = time.monotonic() + WAIT
    while True:
        with record.lock:
            counts = {name: 0 for name in names}
            for span in record.spans:
                if span["name"] in counts:
                    counts[span["name"]] += 1
        if all(counts[name] >= least for name, least in names.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"ddtrace spans missing: {counts} of {names}")
        time.sleep(0.05)


def _produce(script: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    produced = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    if produced.returncode != 0:
        raise AssertionError(f"producer failed:\n{produced.stderr}")
    result: dict[str, Any] = json.loads(produced.stdout.splitlines()[-1])
    result["log"] = produced.stderr
    return result


def run_celery(receiver: OtlpReceiver, record: AgentRecord, tmp: Path) -> Any:
    """Send jobs from a producer to a prefork worker, both with ddtrace."""
    host = CeleryHost(REDIS_URL)
    env = {"TEST_OTHER_TRACERS": "ddtrace"}
    with host.worker(receiver, tmp / "celery.log", env) as worker:
        queue = host.app.conf.task_default_queue
        producer_env = celery_workers.worker_env(receiver, REDIS_URL, queue)
        producer_env.update(env)
        backend = producer_env["TEST_RESULT_BACKEND"]
        result = _produce(CELERY_PRODUCER, producer_env, REDIS_URL, backend, queue)
        # it.flaky runs twice, so five runs in all.
        receiver.wait_for_spans(5, timeout=WAIT, name_prefix="process ")
        _wait_for_agent(record, {"enqueue": 1, "celery.run": 5})
        worker.stop()
        result["worker_log"] = worker.log_text()
    return result


def run_rq(receiver: OtlpReceiver, record: AgentRecord, tmp: Path) -> Any:
    """Enqueue jobs from a producer to a forking worker, both with ddtrace."""
    host = RQHost(REDIS_URL)
    env = {"TEST_OTHER_TRACERS": "ddtrace"}
    with host.worker(receiver, tmp / "rq.log", env) as worker:
        producer_env = rq_workers.worker_env(receiver)
        producer_env.update(env)
        result = _produce(RQ_PRODUCER, producer_env, REDIS_URL, host.queue.name)
        # fail_once runs twice, so four runs in all.
        receiver.wait_for_spans(4, timeout=WAIT, name_prefix="process ")
        names = {"rq.queue.enqueue_job": 3, "rq.worker.perform_job": 4}
        _wait_for_agent(record, names)
        worker.stop()
        result["worker_log"] = worker.log_text()
    return result


def run_dramatiq(receiver: OtlpReceiver, record: AgentRecord, tmp: Path) -> Any:
    """Send messages from a producer to a worker process, both with ddtrace."""
    from tests.dramatiq import workers as dramatiq_workers

    host = DramatiqHost(REDIS_URL)
    env = {"TEST_OTHER_TRACERS": "ddtrace"}
    with host.worker(receiver, tmp / "dramatiq.log", env) as worker:
        producer_env = dramatiq_workers.worker_env(receiver, host.target)
        producer_env.update(env)
        result = _produce(DRAMATIQ_PRODUCER, producer_env)
        # fail_twice runs three times, so six runs in all.
        receiver.wait_for_spans(6, timeout=WAIT, name_prefix="process ")
        _wait_for_agent(record, {"dramatiq.Actor.send_with_options": 4})
        worker.stop()
        result["worker_log"] = worker.log_text()
    return result


def _plain_otlp(receiver: OtlpReceiver) -> list[dict[str, Any]]:
    return [
        {
            "name": span.name,
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "links": [[trace, span_id] for trace, span_id, _ in span.links],
            "attributes": {
                key: value
                for key, value in span.attributes.items()
                if isinstance(value, (str, int, float, bool, list))
            },
        }
        for span in receiver.spans()
    ]


def main(out_path: str) -> None:
    """Run both hosts and write what was received to ``out_path``.

    A failure is written as ``error`` with its traceback, beside whatever
    the agent and the receivers got until then.
    """
    started = time.monotonic()
    os.environ.update(DATADOG_ENV)
    result: dict[str, Any] = {
        "interfaces": sorted(name for _, name in socket.if_nameindex())
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp)),
        fake_agent() as (agent_url, record),
    ):
        os.environ["DD_TRACE_AGENT_URL"] = agent_url
        hosts = (("celery", run_celery), ("rq", run_rq), ("dramatiq", run_dramatiq))
        for name, run in hosts:
            host_started = time.monotonic()
            with OtlpReceiver() as receiver:
                try:
                    result[name] = run(receiver, record, Path(tmp))
                except Exception:
                    result["error"] = traceback.format_exc()
                    result.setdefault(name, {})
                result[name]["otlp"] = _plain_otlp(receiver)
            result[name]["seconds"] = time.monotonic() - host_started
            if "error" in result:
                break
        with record.lock:
            result["agent"] = {"paths": record.paths, "spans": record.spans}
    result["seconds"] = time.monotonic() - started
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
