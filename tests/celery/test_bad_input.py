"""Malformed messages, failing internals and an unreachable collector.

Whatever goes wrong inside jobtrace, a job must return and raise as it
would without jobtrace, and its process span must still arrive. The worker
must not log a message for every job. An unreachable collector must not
slow jobs down or hold a stopping worker longer than JOBTRACE_FLUSH_TIMEOUT.

The worker subprocess tests send their messages with a plain, uninstrumented
Celery producer, so the headers reach the worker exactly as written here.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu.messaging
import pytest
from celery import Celery, chord, group
from celery.result import AsyncResult
from kombu.exceptions import OperationalError
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import jobtrace
import jobtrace_celery
from jobtrace import _provider, current_job
from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from jobtrace._spans import RunHandle

from .test_worker_inprocess import wait_for_spans
from .test_worker_processes import process_spans_for
from .workers import HERE, producer, stop, worker_env

WAIT = 30
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
#: Longer than the 512 characters that OpenTelemetry's traceparent parser
#: accepts, but within jobtrace's own limit of 8192 characters per header.
LONG_TRACEPARENT = f"{TRACEPARENT}-{'a' * 600}"
TEN_KB = "0" * 10_240

#: JOBTRACE_FLUSH_TIMEOUT of the worker subprocesses, in seconds.
FLUSH_TIMEOUT = 2.0
#: Time that Celery's own warm shutdown may add to jobtrace's flush limit.
#: With JOBTRACE_ENABLED=false, Celery 5.7 and Redis on a 2-CPU Linux VM,
#: warm shutdown took 0.8 s for the solo pool and 2.1 s for prefork with 2
#: children.
CELERY_STOP_ALLOWANCE = 5.0
#: 50 jobs took about 0.1 s with a live, closed or silent collector on the
#: same VM. If export blocked each job for FLUSH_TIMEOUT, they would take 100 s.
JOBS_ALLOWANCE = 10.0
SILENT_SERVER_LIFETIME = 120.0

log = logging.getLogger(__name__)

integration = pytest.mark.integration


class UnprintableError(Exception):
    """An exception whose ``str()`` raises, as a buggy library's may."""

    def __str__(self) -> str:
        raise RuntimeError("UnprintableError.__str__ failed")


class DeclaredError(Exception):
    """An exception that a task declares as a single class in ``throws``."""


class InjectedError(RuntimeError):
    """The failure that the tests inject into jobtrace's own code."""


def raise_injected(*args: object, **kwargs: object) -> Any:
    raise InjectedError("injected failure")


class FailingTracer:
    """A tracer whose every span fails to start."""

    start_span = staticmethod(raise_injected)
    start_as_current_span = staticmethod(raise_injected)


# Worker subprocesses.


class LoggedWorker:
    """A running ``celery worker`` subprocess whose output goes to a file."""

    def __init__(
        self, process: subprocess.Popen[bytes], app: Celery, log_path: Path
    ) -> None:
        self.process = process
        self.app = app
        self.log_path = log_path

    def log_offset(self) -> int:
        """Return the current size of the log, to read what follows later."""
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """Return what the worker wrote to its log after ``offset``."""
        with self.log_path.open("rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")


@contextlib.contextmanager
def logged_worker(
    receiver: OtlpReceiver,
    broker_url: str,
    log_path: Path,
    *options: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> Iterator[LoggedWorker]:
    """Run bad_input_app on a fresh queue, writing its output to ``log_path``.

    With ``wait_ready`` the worker has finished one job when this yields.
    On exit it gets SIGTERM and must stop within 60 seconds.
    """
    queue = f"jobtrace-bad-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "celery", "--app", "bad_input_app", "worker",
        "--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
        *options,
    ]  # fmt: skip
    full_env = worker_env(receiver, broker_url, queue)
    full_env["JOBTRACE_FLUSH_TIMEOUT"] = str(FLUSH_TIMEOUT)
    full_env.update(env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=full_env, cwd=HERE, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        app = producer(broker_url, queue)
        if wait_ready:
            app.send_task("it.add", args=(0, 0)).get(timeout=WAIT)
        yield LoggedWorker(process, app, log_path)
    finally:
        stop(process)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accept TCP connections on 127.0.0.1 and never send a byte back.

    Yields the server's URL and the list of accepted connections.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def accept_connections() -> None:
        deadline = time.monotonic() + SILENT_SERVER_LIFETIME
        while not stopping.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept_connections, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stopping.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def closed_port_url() -> str:
    """Return a URL on a 127.0.0.1 port that was free a moment ago."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def module_receiver() -> Iterator[OtlpReceiver]:
    """One OTLP/HTTP receiver for the worker that the header tests share."""
    with OtlpReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def shared_worker(
    redis_url: str,
    module_receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LoggedWorker]:
    """One solo worker on Redis for every header test, started once."""
    log_path = tmp_path_factory.mktemp("bad-input") / "worker.log"
    options = ("--pool", "solo")
    with logged_worker(module_receiver, redis_url, log_path, *options) as worker:
        yield worker


def only_process_span(receiver: OtlpReceiver, result: AsyncResult) -> ReceivedSpan:
    """Wait for the process span of ``result``'s job and return it."""
    (span,) = process_spans_for(receiver, {result.id}, timeout=WAIT)[result.id]
    return span


def process_span_ids_after(worker: LoggedWorker, receiver: OtlpReceiver) -> set[str]:
    """Run a marker job and return the job ids of all process spans received.

    The solo pool runs jobs in order and the batch processor exports spans
    in the order they ended. Once the marker's span has arrived, so has the
    span of every job that the worker ran before it.
    """
    marker = worker.app.send_task("it.add", args=(0, 0))
    marker.get(timeout=WAIT)
    process_spans_for(receiver, {marker.id}, timeout=WAIT)
    return {
        str(span.attributes.get("messaging.message.id"))
        for span in receiver.spans()
        if span.name.startswith("process ")
    }


def warning_lines(log_text: str) -> list[str]:
    return [line for line in log_text.splitlines() if "WARNING/" in line]


# Each case: message headers, and whether they carry a valid traceparent
# that the process span should link to.
HEADER_CASES = [
    pytest.param({"traceparent": "garbage"}, False, id="traceparent-word"),
    pytest.param({"traceparent": ""}, False, id="traceparent-empty"),
    pytest.param({"traceparent": TEN_KB}, False, id="traceparent-10kb"),
    pytest.param({"traceparent": 12345}, False, id="traceparent-int"),
    pytest.param({"traceparent": 1.5}, False, id="traceparent-float"),
    pytest.param({"traceparent": True}, False, id="traceparent-bool"),
    pytest.param({"traceparent": None}, False, id="traceparent-none"),
    pytest.param({"traceparent": [TRACEPARENT]}, False, id="traceparent-list"),
    pytest.param({"traceparent": {"value": TRACEPARENT}}, False, id="traceparent-dict"),
    pytest.param({"traceparent": TRACEPARENT.encode()}, False, id="traceparent-bytes"),
    pytest.param(
        {"traceparent": f"00-{'0' * 32}-{'0' * 16}-01"}, False, id="traceparent-zero"
    ),
    pytest.param(
        {"traceparent": TRACEPARENT.replace("00-", "ff-", 1)},
        False,
        id="traceparent-version-ff",
    ),
    pytest.param(
        {"traceparent": TRACEPARENT, "tracestate": ["a=b"]}, True, id="tracestate-list"
    ),
    pytest.param({"baggage": {"key": "value"}}, False, id="baggage-dict"),
    pytest.param({"baggage": TEN_KB}, False, id="baggage-10kb"),
    pytest.param({"jobtrace_sent_at": "inf"}, False, id="sent-at-inf"),
    pytest.param({"jobtrace_sent_at": "-inf"}, False, id="sent-at-minus-inf"),
    pytest.param({"jobtrace_sent_at": "nan"}, False, id="sent-at-nan"),
    pytest.param({"jobtrace_sent_at": "yesterday"}, False, id="sent-at-word"),
    pytest.param({"jobtrace_sent_at": ""}, False, id="sent-at-empty"),
    pytest.param({"jobtrace_sent_at": 5}, False, id="sent-at-int"),
    pytest.param({"jobtrace_sent_at": ["1.0"]}, False, id="sent-at-list"),
    pytest.param({"jobtrace_sent_at": "1" * 40}, False, id="sent-at-40-digits"),
    pytest.param({"jobtrace_sent_at": TEN_KB}, False, id="sent-at-10kb"),
    pytest.param(
        {"jobtrace_propagation": "sideways", "traceparent": TRACEPARENT},
        True,
        id="propagation-word",
    ),
    pytest.param(
        {"jobtrace_propagation": ["child"], "traceparent": TRACEPARENT},
        True,
        id="propagation-list",
    ),
    pytest.param(
        {"jobtrace_propagation": {"child": 1}, "traceparent": TRACEPARENT},
        True,
        id="propagation-dict",
    ),
    pytest.param(
        {"jobtrace_propagation": "child", "traceparent": "garbage"},
        False,
        id="propagation-child-invalid-parent",
    ),
    pytest.param({"jobtrace_previous_attempt": "garbage"}, False, id="previous-word"),
    pytest.param({"jobtrace_previous_attempt": 7}, False, id="previous-int"),
    pytest.param(
        {"jobtrace_previous_attempt": {"traceparent": TRACEPARENT}},
        False,
        id="previous-dict",
    ),
    pytest.param({"jobtrace_previous_attempt": TEN_KB}, False, id="previous-10kb"),
    pytest.param({"headers": "garbage"}, False, id="nested-string"),
    pytest.param(
        {"headers": {"traceparent": 5, "headers": [1, 2]}}, False, id="nested-mixed"
    ),
    pytest.param(
        {"headers": {"headers": {"headers": "garbage"}}}, False, id="nested-deep"
    ),
]


@integration
@pytest.mark.parametrize(("headers", "linked"), HEADER_CASES)
def test_malformed_header_new_root(
    headers: dict[str, Any],
    linked: bool,
    shared_worker: LoggedWorker,
    module_receiver: OtlpReceiver,
) -> None:
    """A job with malformed trace headers runs and gets a root process span."""
    instrumentor = jobtrace_celery.CeleryInstrumentor()
    assert not instrumentor.is_instrumented_by_opentelemetry, "producer is traced"
    offset = shared_worker.log_offset()

    result = shared_worker.app.send_task("it.add", args=(2, 3), headers=headers)

    assert result.get(timeout=WAIT) == 5
    span = only_process_span(module_receiver, result)
    assert span.attributes["jobtrace.job.outcome"] == "success"
    assert span.parent_span_id is None
    assert "jobtrace.job.queue_time" not in span.attributes
    linked_traces = [trace_id for trace_id, _, _ in span.links]
    assert linked_traces == ([TRACE_ID] if linked else [])
    assert "Traceback" not in shared_worker.log_since(offset)


@integration
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"traceparent": LONG_TRACEPARENT}, id="traceparent-600"),
        pytest.param(
            {"traceparent": TRACEPARENT, "tracestate": "!!!,=,a=b=c"},
            id="tracestate-invalid",
        ),
        pytest.param({"baggage": "garbage"}, id="baggage-invalid"),
        pytest.param(
            {"jobtrace_previous_attempt": LONG_TRACEPARENT}, id="previous-600"
        ),
    ],
)
def test_malformed_header_warns_once(
    headers: dict[str, Any],
    shared_worker: LoggedWorker,
    module_receiver: OtlpReceiver,
) -> None:
    """Five jobs with the same malformed header log at most one warning."""
    offset = shared_worker.log_offset()

    results = [
        shared_worker.app.send_task("it.add", args=(n, 1), headers=headers)
        for n in range(5)
    ]

    assert [r.get(timeout=WAIT) for r in results] == [1, 2, 3, 4, 5]
    process_spans_for(module_receiver, {r.id for r in results}, timeout=WAIT)
    assert len(warning_lines(shared_worker.log_since(offset))) <= 1


# Inputs that Celery runs normally but that make jobtrace lose the process
# span: a task name and the headers of its message.
LOST_SPAN_CASES = [
    pytest.param("bad.unprintable", {}, "UnprintableError", id="unprintable-error"),
    pytest.param("bad.declared", {}, "DeclaredError", id="throws-single-class"),
    pytest.param("it.fail", {"retries": "many"}, "ValueError", id="retries-word"),
]


@integration
@pytest.mark.parametrize(("task_name", "headers", "error_name"), LOST_SPAN_CASES)
def test_failing_job_result_unchanged(
    task_name: str,
    headers: dict[str, Any],
    error_name: str,
    shared_worker: LoggedWorker,
) -> None:
    """The job's result is the exception it raised, as without jobtrace."""
    result = shared_worker.app.send_task(task_name, headers=headers)

    # The test process has not imported bad_input_app, so Celery rebuilds
    # its exception classes under the same name, and only the name compares.
    with pytest.raises(Exception) as raised:
        result.get(timeout=WAIT)
    assert type(raised.value).__name__ == error_name
    assert result.state == "FAILURE"


@integration
@pytest.mark.parametrize(("task_name", "headers", "error_name"), LOST_SPAN_CASES)
def test_failing_job_span_arrives(
    task_name: str,
    headers: dict[str, Any],
    error_name: str,
    shared_worker: LoggedWorker,
    module_receiver: OtlpReceiver,
) -> None:
    """The failing job's process span reaches the receiver."""
    result = shared_worker.app.send_task(task_name, headers=headers)
    with pytest.raises(Exception):
        result.get(timeout=WAIT)

    assert result.id in process_span_ids_after(shared_worker, module_receiver)


def collector_env(
    collector: str, stack: contextlib.ExitStack
) -> tuple[dict[str, str], list[socket.socket]]:
    """Return the worker environment that points at ``collector``.

    ``live`` keeps the receiver of logged_worker, ``closed-port`` points at a
    port where no server listens, and ``silent-server`` at a server that
    accepts connections and never answers. The list contains the silent
    server's accepted connections.
    """
    if collector == "live":
        return {}, []
    if collector == "closed-port":
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": closed_port_url()}, []
    endpoint, accepted = stack.enter_context(silent_server())
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, accepted


def running(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        # The read fails with ESRCH when the process is reaped between the
        # open and the read.
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def seconds_until_exit(pid: int, timeout: float = WAIT) -> float:
    """Wait until process ``pid`` has exited and return how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not running(pid):
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still runs after {timeout} s")


@integration
@pytest.mark.parametrize(
    ("collector", "pool"),
    [
        pytest.param("closed-port", "solo", id="closed-port-solo"),
        pytest.param("silent-server", "solo", id="silent-server-solo"),
        pytest.param("silent-server", "prefork", id="silent-server-prefork"),
    ],
)
def test_unreachable_collector_never_blocks(
    collector: str, pool: str, redis_url: str, tmp_path: Path
) -> None:
    """Jobs run at full speed and warm shutdown ends within the flush limit."""
    pool_options = {
        "solo": ("--pool", "solo"),
        "prefork": ("--pool", "prefork", "--concurrency", "2"),
    }[pool]
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver())
        env, accepted = collector_env(collector, stack)
        worker = stack.enter_context(
            logged_worker(
                receiver, redis_url, tmp_path / "worker.log", *pool_options, env=env
            )
        )

        started = time.monotonic()
        results = [worker.app.send_task("it.add", args=(n, n)) for n in range(50)]
        values = [r.get(timeout=WAIT) for r in results]
        jobs_took = time.monotonic() - started
        time.sleep(0.5)
        started = time.monotonic()
        stop(worker.process)
        stop_took = time.monotonic() - started

    log.info(
        "%s, %s pool: 50 jobs took %.2f s, warm shutdown %.2f s",
        collector,
        pool,
        jobs_took,
        stop_took,
    )
    assert values == [2 * n for n in range(50)]
    assert jobs_took < JOBS_ALLOWANCE, f"50 jobs took {jobs_took:.1f} s"
    assert stop_took < FLUSH_TIMEOUT + CELERY_STOP_ALLOWANCE, (
        f"warm shutdown took {stop_took:.1f} s"
    )
    assert worker.process.returncode == 0
    assert receiver.spans() == []
    if collector == "silent-server":
        assert accepted, "the exporter never connected to the silent server"


@integration
@pytest.mark.parametrize(
    "collector",
    [
        pytest.param("live", id="live"),
        pytest.param("silent-server", id="silent-server"),
    ],
)
def test_recycled_child_exits_promptly(
    collector: str, redis_url: str, tmp_path: Path
) -> None:
    """Once a flush has timed out, recycled children exit within a second.

    The first child to reach a collector that never responds waits the full
    flush limit. The shared failure flag then caps the wait of the children
    after it at DEGRADED_FLUSH_TIMEOUT.
    """
    options = ("--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "1")
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver())
        env, _ = collector_env(collector, stack)
        # The first job runs in the first child, so the test does not wait
        # for billiard to replace a recycled one.
        worker = stack.enter_context(
            logged_worker(
                receiver,
                redis_url,
                tmp_path / "worker.log",
                *options,
                env=env,
                wait_ready=False,
            )
        )

        lingered = []
        for _ in range(3):
            child = worker.app.send_task("bad.pid").get(timeout=WAIT)
            lingered.append(seconds_until_exit(child))

    log.info("%s collector: recycled children exited after %s s", collector, lingered)
    assert lingered[0] < FLUSH_TIMEOUT + 1.0, f"first child took {lingered[0]:.2f} s"
    assert lingered[1] < 1.0, f"second child took {lingered[1]:.2f} s"
    assert lingered[2] < 1.0, f"third child took {lingered[2]:.2f} s"


# In-process workers and eager runs.


@pytest.fixture
def bad_tasks(celery_app: Celery) -> types.SimpleNamespace:
    """Register the tasks that the in-process tests run, before a worker starts."""

    @celery_app.task(name="bad.add")
    def add(x: int, y: int) -> int:
        return x + y

    @celery_app.task(name="bad.fail")
    def fail() -> None:
        raise ValueError("boom")

    @celery_app.task(name="bad.unprintable")
    def unprintable() -> None:
        raise UnprintableError("unprintable")

    @celery_app.task(name="bad.declared", throws=DeclaredError)
    def declared() -> None:
        raise DeclaredError("declared")

    @celery_app.task(name="bad.returns_error", ignore_result=True)
    def returns_error() -> ValueError:
        return ValueError("returned, not raised")

    @celery_app.task(name="bad.quiet", ignore_result=True)
    def quiet() -> int:
        return 1

    @celery_app.task(name="bad.countdown", bind=True)
    def countdown(self: Any, remaining: int) -> int:
        if remaining > 0:
            self.apply_async((remaining - 1,))
        return remaining

    @celery_app.task(name="bad.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @celery_app.task(
        name="bad.flaky_unprintable", bind=True, max_retries=1, default_retry_delay=0
    )
    def flaky_unprintable(self: Any) -> str:
        if self.request.retries < 1:
            raise self.retry(exc=UnprintableError("unprintable"), countdown=0)
        return "done"

    return types.SimpleNamespace(**locals())


@pytest.fixture
def inprocess_worker(instrumented: Any, bad_tasks: Any, celery_worker: Any) -> Any:
    """A solo worker thread, started after the tasks are registered."""
    return celery_worker


@pytest.fixture
def jobtrace_warnings(
    caplog: pytest.LogCaptureFixture,
) -> Callable[[], list[logging.LogRecord]]:
    """Capture jobtrace's warnings and return a function that lists them.

    The in-process Celery worker tests leave the root logger at ERROR, so
    the levels are set here.
    """
    caplog.set_level(logging.WARNING, logger="jobtrace")
    caplog.set_level(logging.WARNING, logger="jobtrace_celery")

    def records() -> list[logging.LogRecord]:
        return [
            record
            for record in caplog.records
            if record.name.startswith("jobtrace") and record.levelno >= logging.WARNING
        ]

    return records


def run_in_copied_context(action: Callable[[], Any]) -> tuple[Any, bool, object]:
    """Run ``action`` in a copy of the current context and report what it left.

    Returns the action's result, whether the current span changed, and
    ``jobtrace.current_job()`` afterwards. A context that jobtrace leaves
    attached stays inside the copy, so it cannot leak into later tests.
    """

    def body() -> tuple[Any, bool, object]:
        span_before = trace.get_current_span()
        result = action()
        return result, trace.get_current_span() is not span_before, current_job()

    return contextvars.copy_context().run(body)


def live_run_handles() -> int:
    gc.collect()
    return sum(isinstance(item, RunHandle) for item in gc.get_objects())


@pytest.mark.parametrize(
    ("module", "name", "replacement"),
    [
        pytest.param(jobtrace, "begin_send", raise_injected, id="begin_send"),
        pytest.param(jobtrace, "begin_run", raise_injected, id="begin_run"),
        pytest.param(jobtrace, "record_error", raise_injected, id="record_error"),
        pytest.param(jobtrace, "end_run", raise_injected, id="end_run"),
        pytest.param(_provider, "_tracer", FailingTracer(), id="tracer"),
    ],
)
def test_failing_internals_leave_jobs_alone(
    module: object,
    name: str,
    replacement: object,
    inprocess_worker: Any,
    bad_tasks: Any,
    monkeypatch: pytest.MonkeyPatch,
    jobtrace_warnings: Callable[[], list[logging.LogRecord]],
) -> None:
    """Jobs return and raise as before, and each kind of failure logs once."""
    monkeypatch.setattr(module, name, replacement)

    added = [bad_tasks.add.delay(n, 1) for n in range(3)]
    failed = [bad_tasks.fail.delay() for _ in range(2)]
    values = [result.get(timeout=WAIT) for result in added]
    errors = []
    for result in failed:
        with pytest.raises(ValueError, match=r"^boom$") as raised:
            result.get(timeout=WAIT)
        errors.append(raised.value)
    # The solo worker runs jobs in order: once this job has a result, the
    # hooks of every earlier job have run.
    bad_tasks.add.delay(0, 0).get(timeout=WAIT)

    assert values == [1, 2, 3]
    assert [type(error) for error in errors] == [ValueError, ValueError]
    kinds = jobtrace.error_counts()
    assert kinds, "the injected failure was never reached"
    error_types = {error_type.rsplit(".", 1)[-1] for _, error_type in kinds}
    assert error_types == {"InjectedError"}
    assert len(jobtrace_warnings()) == len(kinds)


def test_publish_error_passes_through(
    instrumented: InMemorySpanExporter,
    bad_tasks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A publish error reaches the caller as the same object, and ends the send span."""
    broker_down = OperationalError("broker down")

    def publish(*args: object, **kwargs: object) -> None:
        raise broker_down

    monkeypatch.setattr(kombu.messaging.Producer, "publish", publish)

    with pytest.raises(OperationalError) as raised:
        bad_tasks.add.apply_async((1, 2), retry=False)

    assert raised.value is broker_down
    (send,) = instrumented.get_finished_spans()
    assert send.name == "send bad.add"
    assert send.status.status_code is StatusCode.ERROR


def test_eager_apply_unchanged(
    instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """apply() returns the value or the exception it would without jobtrace."""
    added = bad_tasks.add.apply((2, 3))
    failed = bad_tasks.fail.apply()

    assert added.get() == 5
    assert failed.state == "FAILURE"
    assert type(failed.result) is ValueError
    assert str(failed.result) == "boom"
    outcomes = sorted(
        str(span.attributes["jobtrace.job.outcome"])
        for span in instrumented.get_finished_spans()
    )
    assert outcomes == ["failure", "success"]


def test_eager_propagated_error_unchanged(
    instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """apply(throw=True) raises the task's own exception to the caller."""
    with pytest.raises(ValueError, match=r"^boom$") as raised:
        bad_tasks.fail.apply(throw=True)

    assert type(raised.value) is ValueError


def test_eager_propagated_failure_outcome(
    instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """A failure that apply(throw=True) propagates has outcome failure."""
    with pytest.raises(ValueError, match=r"^boom$"):
        bad_tasks.fail.apply(throw=True)

    (span,) = instrumented.get_finished_spans()
    assert span.attributes["jobtrace.job.outcome"] == "failure"
    assert span.attributes["error.type"] == "ValueError"


@pytest.mark.parametrize(
    "task_name",
    [
        pytest.param("fail", id="value-error"),
        pytest.param(
            "unprintable",
            id="unprintable-error",
        ),
        pytest.param(
            "declared",
            id="throws-single-class",
        ),
    ],
)
def test_failed_job_restores_context(
    task_name: str, instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """After a failed eager job, the caller's span and job are current again."""
    task = getattr(bad_tasks, task_name)

    result, span_changed, job_after = run_in_copied_context(task.apply)

    assert result.state == "FAILURE"
    assert span_changed is False
    assert job_after is None


def test_unprintable_errors_keep_no_runs(
    instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """Twenty failing jobs leave no RunHandle behind."""
    jobs = 20

    def run_jobs() -> int:
        before = live_run_handles()
        for _ in range(jobs):
            bad_tasks.unprintable.apply()
        return live_run_handles() - before

    kept = contextvars.copy_context().run(run_jobs)

    assert kept == 0, f"{kept} RunHandles alive after {jobs} jobs"


def test_returned_exception_result_unchanged(
    instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """A task that returns an exception object succeeds with that object."""
    result = bad_tasks.returns_error.apply()

    assert result.state == "SUCCESS"
    assert type(result.result) is ValueError


def test_returned_exception_not_recorded(
    instrumented: InMemorySpanExporter, bad_tasks: Any
) -> None:
    """A returned exception object is a value, not an error on the span."""
    bad_tasks.returns_error.apply()

    (span,) = instrumented.get_finished_spans()
    assert span.attributes["jobtrace.job.outcome"] == "success"
    assert [event.name for event in span.events] == []


def test_unprintable_retry_unchanged(
    inprocess_worker: Any, bad_tasks: Any, instrumented: InMemorySpanExporter
) -> None:
    """A retry whose reason cannot be printed still retries once and succeeds."""
    result = bad_tasks.flaky_unprintable.delay()

    assert result.get(timeout=WAIT) == "done"
    runs = wait_for_spans(instrumented, "process bad.flaky_unprintable", count=2)
    runs.sort(key=lambda span: span.attributes["jobtrace.job.attempt"])
    assert [span.attributes["jobtrace.job.attempt"] for span in runs] == [1, 2]
    outcomes = [span.attributes["jobtrace.job.outcome"] for span in runs]
    assert outcomes == ["retry", "success"]


def test_ignored_result_is_traced(
    inprocess_worker: Any, bad_tasks: Any, instrumented: InMemorySpanExporter
) -> None:
    """A task with ignore_result=True gets a send and a process span."""
    bad_tasks.quiet.delay()

    (send,) = wait_for_spans(instrumented, "send bad.quiet")
    (run,) = wait_for_spans(instrumented, "process bad.quiet")
    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert [link.context.span_id for link in run.links] == [send.context.span_id]


def test_task_enqueues_itself(
    inprocess_worker: Any, bad_tasks: Any, instrumented: InMemorySpanExporter
) -> None:
    """A task that enqueues itself gets one span per run, each a first attempt."""
    assert bad_tasks.countdown.delay(5).get(timeout=WAIT) == 5

    runs = wait_for_spans(instrumented, "process bad.countdown", count=6)
    sends = wait_for_spans(instrumented, "send bad.countdown", count=6)
    run_ids = {run.context.span_id for run in runs}
    from_runs = [s for s in sends if s.parent and s.parent.span_id in run_ids]
    assert len(runs) == 6
    assert len(from_runs) == 5
    assert {run.attributes["jobtrace.job.attempt"] for run in runs} == {1}
    link_types = {
        link.attributes["jobtrace.link.type"] for run in runs for link in run.links
    }
    assert link_types == {"send"}


def test_group_and_chord_many_members(
    inprocess_worker: Any, bad_tasks: Any, instrumented: InMemorySpanExporter
) -> None:
    """Every member of a 40-job group and a 20-job chord gets its spans."""
    members = group(bad_tasks.add.s(n, n) for n in range(40)).apply_async()
    summed = chord(bad_tasks.add.s(n, n) for n in range(20))(bad_tasks.total.s())

    assert members.get(timeout=WAIT) == [2 * n for n in range(40)]
    assert summed.get(timeout=WAIT) == sum(2 * n for n in range(20))
    runs = wait_for_spans(instrumented, "process bad.add", count=60)
    sends = wait_for_spans(instrumented, "send bad.add", count=60)
    (callback_send,) = wait_for_spans(instrumented, "send bad.total")
    (callback_run,) = wait_for_spans(instrumented, "process bad.total")
    assert len(runs) == 60
    assert len(sends) == 60
    send_ids = {send.context.span_id for send in sends}
    linked_sends = [link.context.span_id for run in runs for link in run.links]
    assert len(linked_sends) == 60
    assert set(linked_sends) <= send_ids
    run_ids = {run.context.span_id for run in runs}
    assert callback_send.parent is not None
    assert callback_send.parent.span_id in run_ids
    links = [link.context.span_id for link in callback_run.links]
    assert links == [callback_send.context.span_id]
