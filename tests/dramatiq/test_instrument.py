"""instrument() and uninstrument(), and errors inside jobtrace's own hooks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError, default_middleware

import jobtrace
import jobtrace_dramatiq
from jobtrace_dramatiq import Tracing
from jobtrace_dramatiq._hooks import InstalledTracing

from .conftest import RejectEnqueue, Seen, run_all, running_worker
from .workers import default_middleware as dramatiq_defaults


def tracing_count(broker: StubBroker) -> int:
    """Return how many Tracing middleware the broker has."""
    return sum(isinstance(m, Tracing) for m in broker.middleware)


@pytest.fixture
def restore() -> Iterator[None]:
    """Uninstrument after the test, whatever it did."""
    yield
    jobtrace_dramatiq.uninstrument()


def test_instrument_puts_tracing_first(exporter: Any, broker: StubBroker) -> None:
    """instrument() adds one Tracing middleware at the front of the list."""
    others = list(broker.middleware)
    jobtrace_dramatiq.instrument(broker)
    try:
        assert isinstance(broker.middleware[0], Tracing)
        assert broker.middleware[1:] == others
    finally:
        jobtrace_dramatiq.uninstrument()


def test_instrument_uses_global_broker(
    exporter: Any, broker: StubBroker, restore: None
) -> None:
    """Without an argument, instrument() traces the global broker."""
    jobtrace_dramatiq.instrument()

    assert dramatiq.get_broker() is broker
    assert tracing_count(broker) == 1


def test_instrument_twice_adds_once(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """A second instrument() call adds no second middleware or span."""
    jobtrace_dramatiq.instrument()
    jobtrace_dramatiq.instrument(broker)
    actors.add.send(1, 2)

    assert tracing_count(broker) == 1
    assert default_middleware.count(InstalledTracing) == 1
    sends = [s for s in instrumented.get_finished_spans() if s.name == "send add"]
    assert len(sends) == 1


def test_later_brokers_get_tracing(exporter: Any, restore: None) -> None:
    """Brokers built after instrument() get the middleware by default."""
    jobtrace_dramatiq.instrument()
    later = StubBroker()
    explicit = StubBroker(middleware=[])

    assert isinstance(later.middleware[0], Tracing)
    assert tracing_count(explicit) == 0


def test_uninstrument_restores_dramatiq(
    exporter: Any, actors: Any, broker: StubBroker
) -> None:
    """After uninstrument, the middleware lists are as before and no spans appear."""
    defaults = list(default_middleware)
    before = list(broker.middleware)
    jobtrace_dramatiq.instrument(broker)
    built_while_instrumented = StubBroker()
    jobtrace_dramatiq.uninstrument()
    jobtrace_dramatiq.uninstrument()
    after = list(broker.middleware)
    actors.add.send(1, 2)
    run_all(broker)

    assert after == before
    assert default_middleware == defaults
    assert exporter.get_finished_spans() == ()
    # A broker that got the middleware by default keeps it, switched off.
    assert tracing_count(built_while_instrumented) == 1


def test_middleware_by_name(exporter: Any, seen: Seen) -> None:
    """A broker built with Tracing listed first traces without instrument()."""
    created = StubBroker(middleware=[Tracing(), *dramatiq_defaults()])
    created.emit_after("process_boot")

    @dramatiq.actor(broker=created, max_retries=0)
    def ping() -> None:
        seen.record("ping")

    ping.send()
    run_all(created)
    created.close()

    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["send ping", "process ping"]


def test_disabled_instruments_nothing(
    exporter: Any, broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With JOBTRACE_ENABLED=false, instrument() adds nothing."""
    monkeypatch.setattr(jobtrace, "enabled", lambda: False)
    jobtrace_dramatiq.instrument(broker)

    assert tracing_count(broker) == 0
    assert InstalledTracing not in default_middleware


def test_disabled_middleware_is_inert(
    exporter: Any, monkeypatch: pytest.MonkeyPatch, seen: Seen
) -> None:
    """A Tracing listed by name does nothing when jobtrace is disabled."""
    monkeypatch.setattr(jobtrace, "enabled", lambda: False)
    created = StubBroker(middleware=[Tracing(), *dramatiq_defaults()])
    created.emit_after("process_boot")

    @dramatiq.actor(broker=created, max_retries=0)
    def ping() -> None:
        seen.record("ping")

    message = ping.send()
    run_all(created)
    created.close()

    assert exporter.get_finished_spans() == ()
    assert "jobtrace" not in message.options
    assert len(seen.labelled("ping")) == 1


def test_unsupported_version_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Dramatiq outside the supported range makes instrument() raise."""
    monkeypatch.setattr(jobtrace._hosts, "version", lambda name: "1.16.0")

    with pytest.raises(RuntimeError, match=r"dramatiq >= 1\.17, found dramatiq 1\.16"):
        jobtrace_dramatiq.instrument()
    with pytest.raises(RuntimeError, match=r"dramatiq >= 1\.17"):
        Tracing()


def test_unknown_attribute_raises() -> None:
    """The package's lazy attributes do not hide typos."""
    with pytest.raises(AttributeError, match="Tracer"):
        jobtrace_dramatiq.Tracer  # noqa: B018


def test_failed_enqueue_marks_send(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """A send whose enqueue raised ends with ERROR at the next enqueue."""
    broker.add_middleware(RejectEnqueue())
    with pytest.raises(MiddlewareError):
        actors.add.send(1, 2)
    broker.middleware.pop()
    actors.add.send(3, 4)

    failed, sent = [
        s for s in instrumented.get_finished_spans() if s.name == "send add"
    ]
    assert failed.status.is_ok is False
    assert failed.attributes["error.type"] == "jobtrace_dramatiq._sends.EnqueueError"
    assert sent.status.is_unset


def test_core_errors_leave_messages_alone(
    instrumented: Any,
    actors: Any,
    broker: StubBroker,
    seen: Seen,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When core raises in every hook, messages run and fail as before."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("core is broken")

    for name in ("begin_send", "end_send", "begin_run", "end_run", "flush"):
        monkeypatch.setattr(jobtrace, name, broken)
    with caplog.at_level(logging.WARNING):
        ok = actors.add.send(1, 2)
        failing = actors.fail.send()
        run_all(broker)

    assert seen.labelled("add")[0]["result"] == 3
    assert [m.message_id for m in broker.dead_letters] == [failing.message_id]
    assert ok.message_id not in {m.message_id for m in broker.dead_letters}
    ours = [r for r in caplog.records if r.name.startswith("jobtrace")]
    hooks = [record.args[0] for record in ours if record.args]
    # One record per failing hook, however many messages hit it.
    assert len(hooks) == len(set(hooks))
    assert "dramatiq.before_enqueue" in hooks
    assert "dramatiq.before_process_message" in hooks
    assert "dramatiq.worker_shutdown" in hooks
    # Dramatiq itself logged no failure of a middleware.
    assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]


def test_run_ends_after_uninstrument(exporter: Any, seen: Seen) -> None:
    """A run in progress at uninstrument() still ends and leaves no context."""
    jobtrace_dramatiq.instrument()
    built = StubBroker(middleware=dramatiq_defaults())
    built.emit_after("process_boot")

    @dramatiq.actor(broker=built, max_retries=0)
    def wait() -> None:
        seen.record("started")
        time.sleep(0.3)

    @dramatiq.actor(broker=built, max_retries=0)
    def after() -> None:
        seen.record("after")

    wait.send()
    with running_worker(built, threads=1):
        while not seen.labelled("started"):
            time.sleep(0.01)
        jobtrace_dramatiq.uninstrument()
        after.send()
        built.join(after.queue_name)
    built.close()

    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["send wait", "process wait"]
    (entry,) = seen.labelled("after")
    assert entry["trace_id"] == 0
