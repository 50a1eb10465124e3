"""A span pipe passed to a spawned child through the environment.

The variable names two descriptors and the pid of the process that set
it. A child accepts it only from its parent, for descriptors that are the
right ends of a pipe, and removes it from its environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import _handoff, _spawned
from jobtrace._handoff import HandoffProcessor
from jobtrace._spawned import PIPE_VARIABLE

pytestmark = pytest.mark.skipif(
    not hasattr(os, "posix_spawn"), reason="needs os.posix_spawn"
)


@pytest.fixture
def pipe_fds() -> Iterator[tuple[int, int]]:
    """The write end of one pipe and the read end of another."""
    read_fd, write_fd = os.pipe()
    ack_read_fd, ack_write_fd = os.pipe()
    yield write_fd, ack_read_fd
    for fd in (read_fd, write_fd, ack_read_fd, ack_write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    """An exporter behind the processor that open_span_pipe uses."""
    memory = InMemorySpanExporter()
    _handoff.activate(HandoffProcessor(SimpleSpanProcessor(memory)))
    yield memory
    _handoff.activate(None)


@pytest.fixture(autouse=True)
def no_variable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start and end each test without the variable or a taken pipe."""
    monkeypatch.delenv(PIPE_VARIABLE, raising=False)
    _spawned.take_inherited()
    yield
    _spawned.take_inherited()


def from_parent(write_fd: int, ack_fd: int) -> str:
    """Return the value that this process's parent would have set."""
    return f"{os.getppid()}:{write_fd}:{ack_fd}"


def test_parse_accepts_parent_pipe(pipe_fds: tuple[int, int]) -> None:
    """A value from the parent that names a pipe's ends is accepted."""
    write_fd, ack_fd = pipe_fds

    assert _spawned.parse(from_parent(write_fd, ack_fd)) == (write_fd, ack_fd)


@pytest.mark.parametrize("value", ["", "12", "1:2", "1:2:3:4", "a:b:c", "1:2:x"])
def test_parse_rejects_malformed(value: str, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed value is ignored with one warning."""
    with caplog.at_level(logging.DEBUG, logger="jobtrace._spawned"):
        assert _spawned.parse(value) is None

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert PIPE_VARIABLE in record.getMessage()


def test_parse_rejects_other_pid(
    pipe_fds: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A value set by a process other than the parent is ignored at DEBUG."""
    write_fd, ack_fd = pipe_fds
    value = f"{os.getpid()}:{write_fd}:{ack_fd}"

    with caplog.at_level(logging.DEBUG, logger="jobtrace._spawned"):
        assert _spawned.parse(value) is None

    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert str(os.getpid()) in record.getMessage()


def test_parse_rejects_regular_file(caplog: pytest.LogCaptureFixture) -> None:
    """Descriptors of a regular file are ignored with one warning."""
    with tempfile.TemporaryFile() as first, tempfile.TemporaryFile() as second:
        value = from_parent(first.fileno(), second.fileno())
        with caplog.at_level(logging.DEBUG, logger="jobtrace._spawned"):
            assert _spawned.parse(value) is None

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "not the ends of a pipe" in record.getMessage()


def test_parse_rejects_swapped_ends(
    pipe_fds: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A read end named as the span fd, or a write end as the other, is ignored."""
    write_fd, ack_fd = pipe_fds

    with caplog.at_level(logging.DEBUG, logger="jobtrace._spawned"):
        assert _spawned.parse(from_parent(ack_fd, write_fd)) is None

    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_parse_rejects_closed_fds(
    pipe_fds: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Descriptors that are not open are ignored with one warning."""
    write_fd, ack_fd = pipe_fds
    os.close(write_fd)

    with caplog.at_level(logging.DEBUG, logger="jobtrace._spawned"):
        assert _spawned.parse(from_parent(write_fd, ack_fd)) is None

    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_take_removes_variable_and_keeps_pipe(pipe_fds: tuple[int, int]) -> None:
    """A valid pipe is taken once, no longer inheritable, and the variable goes."""
    write_fd, ack_fd = pipe_fds
    os.set_inheritable(write_fd, True)
    os.set_inheritable(ack_fd, True)
    os.environ[PIPE_VARIABLE] = from_parent(write_fd, ack_fd)

    _spawned.take_from_environment()

    assert PIPE_VARIABLE not in os.environ
    assert not os.get_inheritable(write_fd)
    assert not os.get_inheritable(ack_fd)
    assert _spawned.take_inherited() == (write_fd, ack_fd)
    assert _spawned.take_inherited() is None


def test_take_removes_invalid_variable() -> None:
    """An invalid value is removed from the environment too, and no pipe is kept."""
    os.environ[PIPE_VARIABLE] = "not a pipe"

    _spawned.take_from_environment()

    assert PIPE_VARIABLE not in os.environ
    assert _spawned.take_inherited() is None


def test_forked_child_does_not_take_pipe(pipe_fds: tuple[int, int]) -> None:
    """A process forked after the pipe was taken does not use it."""
    os.environ[PIPE_VARIABLE] = from_parent(*pipe_fds)
    _spawned.take_from_environment()

    pid = os.fork()
    if pid == 0:
        os._exit(0 if _spawned.take_inherited() is None else 3)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert _spawned.take_inherited() == pipe_fds


def test_activate_uses_taken_pipe(pipe_fds: tuple[int, int]) -> None:
    """The first processor activated after the pipe was taken writes to it."""
    os.environ[PIPE_VARIABLE] = from_parent(*pipe_fds)
    _spawned.take_from_environment()
    processor = HandoffProcessor(SimpleSpanProcessor(InMemorySpanExporter()))

    _handoff.activate(processor)
    try:
        assert _handoff.sends_to_parent()
        second = HandoffProcessor(SimpleSpanProcessor(InMemorySpanExporter()))
        _handoff.activate(second)
        assert not second.sends_to_parent()
    finally:
        _handoff.activate(None)


def test_pass_to_spawn_restores_variable(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable names the pipe only until the parent takes its end."""
    monkeypatch.setenv(PIPE_VARIABLE, "earlier")
    used = jobtrace.open_span_pipe()
    failed = jobtrace.open_span_pipe()
    assert used is not None
    assert failed is not None

    used.pass_to_spawn()
    value = os.environ[PIPE_VARIABLE]
    parent, write_fd, ack_fd = (int(part) for part in value.split(":"))
    assert parent == os.getpid()
    assert os.get_inheritable(write_fd)
    assert os.get_inheritable(ack_fd)
    used.use_in_parent()
    assert os.environ[PIPE_VARIABLE] == "earlier"

    monkeypatch.delenv(PIPE_VARIABLE)
    failed.pass_to_spawn()
    failed.close()
    assert PIPE_VARIABLE not in os.environ
    used.collect()


_CHILD = """
import os, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from jobtrace import _handoff

processor = _handoff.HandoffProcessor(SimpleSpanProcessor(InMemorySpanExporter()))
_handoff.activate(processor)
provider = TracerProvider()
provider.add_span_processor(processor)
with provider.get_tracer("tests").start_as_current_span("spawned"):
    pass
inherited = "JOBTRACE_SPAN_PIPE" in os.environ
sys.exit(0 if _handoff.sends_to_parent() and not inherited else 3)
"""


def test_spawned_child_hands_spans_over(memory: InMemorySpanExporter) -> None:
    """A child started with posix_spawn sends its span to this process."""
    pipe = jobtrace.open_span_pipe()
    assert pipe is not None

    pipe.pass_to_spawn()
    try:
        command = [sys.executable, "-c", _CHILD]
        pid = os.posix_spawn(sys.executable, command, os.environ)
    except OSError:
        pipe.close()
        raise
    pipe.use_in_parent()
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert pipe.collect() == []
    assert [span.name for span in memory.get_finished_spans()] == ["spawned"]
    assert PIPE_VARIABLE not in os.environ


def test_unrelated_spawn_ignores_variable() -> None:
    """A child that finds a value set by another process does not use it."""
    read_fd, write_fd = os.pipe()
    ack_read_fd, ack_write_fd = os.pipe()
    # The child's parent is this process, not the pid in the value.
    value = f"{os.getppid()}:{write_fd}:{ack_read_fd}"
    os.set_inheritable(write_fd, True)
    os.set_inheritable(ack_read_fd, True)
    env = {**os.environ, PIPE_VARIABLE: value}
    try:
        command = [sys.executable, "-c", _CHILD]
        pid = os.posix_spawn(sys.executable, command, env)
        _, status = os.waitpid(pid, 0)
    finally:
        for fd in (read_fd, write_fd, ack_read_fd, ack_write_fd):
            os.close(fd)

    assert os.waitstatus_to_exitcode(status) == 3
