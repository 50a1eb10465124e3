"""``python -m examples.flask_shop`` run as a user runs it, checked on the wire.

The example forwards every span to ``OTEL_EXPORTER_OTLP_ENDPOINT``, which
these tests point at their own OTLP receiver.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobtrace._receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
HOSTS = {"celery", "rq", "dramatiq"}
#: The example sends two orders.
REQUESTS = 2


def run_example(
    mode: str,
) -> tuple[subprocess.CompletedProcess[str], list[ReceivedSpan]]:
    """Run the example with ``JOBTRACE_PROPAGATION=mode`` and return its spans."""
    pytest.importorskip("flask")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JOBTRACE_"))
    }
    with OtlpReceiver() as backend:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=backend.endpoint,
            JOBTRACE_PROPAGATION=mode,
        )
        done = subprocess.run(
            [sys.executable, "-m", "examples.flask_shop"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        return done, backend.spans()


@pytest.fixture(scope="module", params=["link", "child"])
def example(request: pytest.FixtureRequest) -> Run:
    """One run of the example per propagation mode."""
    done, spans = run_example(request.param)
    return Run(request.param, done, spans)


def test_example_exits_cleanly(example: Run) -> None:
    """The example exits 0 and prints one block of traces per request."""
    assert example.done.returncode == 0, example.done.stderr
    assert example.done.stdout.count("== POST /orders") == REQUESTS
    assert "Forwarded every span to" in example.done.stdout


def test_request_spans_come_from_flask(example: Run) -> None:
    """Each request is one SERVER span of the Flask app, on the web resource."""
    requests = request_spans(example)

    assert len(requests) == REQUESTS
    for request in requests:
        assert request.name == "POST /orders"
        assert request.attributes["http.route"] == "/orders"
        assert request.parent_span_id is None
        assert request.resource["jobtrace.component"] == "web"


def test_send_spans_are_request_children(example: Run) -> None:
    """Each request has one send span per host, its child, on the web resource."""
    for request in request_spans(example):
        sends = sends_of(example, request)

        assert {span.attributes["messaging.system"] for span in sends} == HOSTS
        assert len(sends) == len(HOSTS)
        for send in sends:
            assert send.trace_id == request.trace_id
            assert send.kind == "PRODUCER"
            assert send.resource["jobtrace.component"] == "web"


def test_each_job_ran_once(example: Run) -> None:
    """Each send span has exactly one process span, a success on a worker."""
    sends = [span for span in example.spans if span.kind == "PRODUCER"]
    runs = [span for span in example.spans if span.kind == "CONSUMER"]

    assert len(sends) == REQUESTS * len(HOSTS)
    assert len(runs) == len(sends)
    for send in sends:
        matching = runs_of(example, send)
        assert len(matching) == 1, send.name
        run = matching[0]
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.attributes["jobtrace.job.attempt"] == 1
        assert run.resource["jobtrace.component"] == "worker"


def test_runs_follow_mode(example: Run) -> None:
    """Link mode: each run starts a trace linked to its send span.

    Child mode: each run is the send span's child, in the request's trace.
    """
    sends = [span for span in example.spans if span.kind == "PRODUCER"]

    for send in sends:
        (run,) = runs_of(example, send)
        if example.mode == "link":
            assert run.trace_id != send.trace_id
            assert run.parent_span_id is None
            assert run.links == (
                (send.trace_id, send.span_id, {"jobtrace.link.type": "send"}),
            )
        else:
            assert run.trace_id == send.trace_id
            assert run.parent_span_id == send.span_id
            assert run.links == ()


def test_example_prints_runs_per_request(example: Run) -> None:
    """Each printed block contains the request's three runs, in either mode."""
    blocks = example.done.stdout.split("== POST /orders")[1:]

    assert len(blocks) == REQUESTS
    for block in blocks:
        assert block.count("─ process ") == len(HOSTS)
        assert block.count("outcome=success  component=worker") == len(HOSTS)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of the example: its propagation mode, result and spans."""

    mode: str
    done: subprocess.CompletedProcess[str]
    spans: list[ReceivedSpan]


def request_spans(run: Run) -> list[ReceivedSpan]:
    return [span for span in run.spans if span.kind == "SERVER"]


def sends_of(run: Run, request: ReceivedSpan) -> list[ReceivedSpan]:
    return [
        span
        for span in run.spans
        if span.name.startswith("send ") and span.parent_span_id == request.span_id
    ]


def runs_of(run: Run, send: ReceivedSpan) -> list[ReceivedSpan]:
    """Return the process spans of the job that ``send`` enqueued."""
    message_id = send.attributes["messaging.message.id"]
    return [
        span
        for span in run.spans
        if span.kind == "CONSUMER"
        and span.attributes["messaging.message.id"] == message_id
    ]


def clean_env() -> dict[str, str]:
    """Return this environment without OTEL_* and JOBTRACE_* variables."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JOBTRACE_"))
    }


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_forward_failures_fail_the_run() -> None:
    """A closed forward endpoint makes the example report the failures and exit 1."""
    pytest.importorskip("flask")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    endpoint = f"http://127.0.0.1:{closed_port()}"

    done = subprocess.run(
        [sys.executable, "-m", "examples.flask_shop"],
        cwd=ROOT,
        env={**clean_env(), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    assert "Forwarded every span" not in done.stdout
    assert re.search(
        rf"Failed to forward [1-9]\d* OTLP request\(s\) to {endpoint}", done.stderr
    )


def descendants(pid: int) -> set[int]:
    """Return the ids of every running process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def redis_server_of(worker: int) -> int | None:
    """Return the id of the embedded redis-server that ``worker`` uses."""
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    url = next(item for item in environ if item.startswith(b"REDIS_URL="))
    port = url.rpartition(b":")[2].partition(b"/")[0]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in command and command.rstrip(b"\0").endswith(b":" + port):
            return int(entry.name)
    return None


def running(pid: int) -> bool:
    """Return whether ``pid`` is a process that has not exited."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_everything_quietly() -> None:
    """SIGINT to the example's process group stops its workers and Redis, exit 130."""
    pytest.importorskip("flask")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    example = subprocess.Popen(
        [sys.executable, "-m", "examples.flask_shop"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # The first order's line shows that Redis, the workers and the web
        # server run.
        assert example.stdout is not None
        ready, _, _ = select.select([example.stdout], [], [], 120)
        assert ready, "the example printed no order within 120 s"
        first = example.stdout.readline()
        assert first.startswith("POST /orders"), first
        started = descendants(example.pid)
        workers = [pid for pid in started if running(pid)]
        redis_server = redis_server_of(workers[0])
        assert redis_server is not None

        os.killpg(example.pid, signal.SIGINT)
        _, stderr = example.communicate(timeout=120)
    finally:
        if example.poll() is None:
            example.kill()
            example.wait()

    assert example.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "did not finish within" not in stderr
    assert (
        stderr.strip().splitlines()[-1] == "Interrupted: stopped the workers and Redis."
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(running, [*started, redis_server])):
        time.sleep(0.1)
    assert [pid for pid in started if running(pid)] == []
    assert not running(redis_server)
