"""Errors inside jobtrace never change what a job returns, raises or retries.

Each case makes one of jobtrace's functions, or a span processor, raise
on every call. The host's jobs then run with jobtrace, and what the caller
sees of them must equal what it saw without jobtrace. Each kind of error
is logged once and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
import jobtrace_celery
import jobtrace_dramatiq
import jobtrace_rq
from jobtrace import _carrier, _guard, _metrics, _provider, signals
from jobtrace._handoff import HandoffProcessor
from jobtrace_celery import _overlap as celery_overlap
from jobtrace_dramatiq import _overlap as dramatiq_overlap
from jobtrace_rq import _overlap as rq_overlap

from .inprocess import RUNNERS, Runner, Seen, make_runner

INSTRUMENT = {
    "celery": (jobtrace_celery.instrument, jobtrace_celery.uninstrument),
    "rq": (jobtrace_rq.instrument, jobtrace_rq.uninstrument),
    "dramatiq": (jobtrace_dramatiq.instrument, jobtrace_dramatiq.uninstrument),
}


class InjectedError(RuntimeError):
    """The error that the tests inject into jobtrace's own code."""


def raise_injected(*args: object, **kwargs: object) -> Any:
    raise InjectedError("injected failure")


class FailingTracer:
    """A tracer whose every span fails to start."""

    start_span = staticmethod(raise_injected)
    start_as_current_span = staticmethod(raise_injected)


def _raising_receiver(sender: object, **kwargs: object) -> None:
    raise InjectedError("injected failure")


Inject = Callable[[pytest.MonkeyPatch], None]


def _patch(target: object, name: str, value: object = raise_injected) -> Inject:
    return lambda monkeypatch: monkeypatch.setattr(target, name, value)


def _failing_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    # The memory fixture disconnects it after the test.
    signals.job_started.connect(_raising_receiver, weak=False)


def _failing_tracer_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each plugin looks for other tracers at instrument(), at its first
    # enqueue or run, or when a worker starts.
    for module in (celery_overlap, rq_overlap, dramatiq_overlap):
        monkeypatch.setattr(module, "check", raise_injected)


FAULTS: dict[str, Inject] = {
    "begin_send": _patch(jobtrace, "begin_send"),
    "end_send": _patch(jobtrace, "end_send"),
    "begin_run": _patch(jobtrace, "begin_run"),
    "record_error": _patch(jobtrace, "record_error"),
    "end_run": _patch(jobtrace, "end_run"),
    "tracer": _patch(_provider, "_tracer", FailingTracer()),
    "extract": _patch(_carrier, "extract"),
    "metrics": _patch(_metrics, "record_run"),
    "processor-on-start": _patch(SimpleSpanProcessor, "on_start"),
    "processor-on-end": _patch(SimpleSpanProcessor, "on_end"),
    "signal-receiver": _failing_receiver,
    "other-tracer-check": _failing_tracer_checks,
}


#: Faults outside the span path: every send and run still gets its span.
SPANS_INTACT = {"other-tracer-check"}
#: Sends and runs of the three jobs: the retried job sends and runs twice.
SPANS_PER_KIND = 4

#: Functions that a host's plugin does not call, by host. The Dramatiq
#: plugin passes a run's exception to end_run instead of record_error.
NOT_CALLED = {"dramatiq": {"record_error"}}


@pytest.fixture(scope="module", params=RUNNERS)
def runner(
    request: pytest.FixtureRequest, redis_url: str
) -> Iterator[tuple[Runner, list[Seen]]]:
    """A started runner of each host, and what its jobs did without jobtrace."""
    created = make_runner(request.param, redis_url)
    with created.started():
        yield created, created.run()


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    """Hand jobtrace a provider whose processor is jobtrace's own wrapper."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(HandoffProcessor(SimpleSpanProcessor(exported)))
    _provider._reset_for_tests()
    _guard.reset_error_counts()
    jobtrace.configure(tracer_provider=provider)
    yield exported
    signals.job_started.disconnect(_raising_receiver)
    _provider._reset_for_tests()
    _guard.reset_error_counts()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_internal_error_changes_nothing(
    fault: str,
    runner: tuple[Runner, list[Seen]],
    memory: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Jobs return, raise and retry as without jobtrace; each kind logs once."""
    started, baseline = runner
    if fault in NOT_CALLED.get(started.name, ()):
        pytest.skip(f"the {started.name} plugin never calls {fault}")
    caplog.set_level(logging.WARNING, logger="jobtrace")
    instrument, uninstrument = INSTRUMENT[started.name]
    FAULTS[fault](monkeypatch)
    instrument()
    try:
        seen = started.run()
    finally:
        uninstrument()

    kinds = jobtrace.error_counts()
    logged = [
        record
        for record in caplog.records
        if record.name.startswith("jobtrace") and record.levelno >= logging.WARNING
    ]
    assert seen == baseline
    assert kinds, "the injected error was never raised"
    assert {error_type.rsplit(".", 1)[-1] for _, error_type in kinds} == {
        "InjectedError"
    }
    assert len(logged) == len(kinds)
    assert sum(kinds.values()) >= len(kinds)
    assert not trace.get_current_span().get_span_context().is_valid
    assert jobtrace.current_job() is None
    if fault in SPANS_INTACT:
        names = [span.name for span in memory.get_finished_spans()]
        assert sum(n.startswith("send ") for n in names) == SPANS_PER_KIND, names
        assert sum(n.startswith("process ") for n in names) == SPANS_PER_KIND, names
