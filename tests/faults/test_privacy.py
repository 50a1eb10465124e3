"""Job arguments stay out of spans unless recording them is turned on.

The jobs run on each host's in-process worker, and the checks read the
process spans that jobtrace really produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace_celery
import jobtrace_dramatiq
import jobtrace_rq
from jobtrace import _provider

from .inprocess import RUNNERS, Runner, make_runner

INSTRUMENT = {
    "celery": (jobtrace_celery.instrument, jobtrace_celery.uninstrument),
    "rq": (jobtrace_rq.instrument, jobtrace_rq.uninstrument),
    "dramatiq": (jobtrace_dramatiq.instrument, jobtrace_dramatiq.uninstrument),
}
PUBLIC = "public-value-7f3a"
SECRETS = {
    "password": "hunter2-b81c",
    "api_key": "sk-live-41d9",
    "auth_token": "tok-6e02",
    "Authorization": "Bearer 93aa",
    "session-cookie": "sid=c0ffee",
    "client_secret": "cs-77d1",
    "iban": "DE89370400440532013000",
}
ARGS = (PUBLIC, {"nested": {"password": SECRETS["password"]}})
KWARGS = {**SECRETS, "note": PUBLIC, "blob": "x" * 5000}


@pytest.fixture(scope="module", params=RUNNERS)
def runner(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Runner]:
    """A started in-process runner of each host."""
    created = make_runner(request.param, redis_url)
    with created.started():
        yield created


def _run_span(runner: Runner, exporter: InMemorySpanExporter) -> ReadableSpan:
    instrument, uninstrument = INSTRUMENT[runner.name]
    instrument()
    try:
        job_id = runner.run_echo(ARGS, KWARGS)
    finally:
        uninstrument()
    return next(
        span
        for span in exporter.get_finished_spans()
        if span.name.startswith("process ")
        and (span.attributes or {}).get("messaging.message.id") == job_id
    )


def _attribute_text(span: ReadableSpan) -> str:
    return " ".join(str(value) for value in (span.attributes or {}).values())


def test_arguments_not_recorded_by_default(
    runner: Runner,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the setting, no argument value reaches the process span."""
    monkeypatch.delenv("JOBTRACE_RECORD_ARGUMENTS", raising=False)

    span = _run_span(runner, exporter)

    text = _attribute_text(span)
    assert PUBLIC not in text
    for value in SECRETS.values():
        assert value not in text
    assert "jobtrace.job.args" not in (span.attributes or {})
    assert "jobtrace.job.kwargs" not in (span.attributes or {})


def test_recorded_arguments_redacted(
    runner: Runner,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the setting, arguments are recorded, cut, and secrets redacted."""
    monkeypatch.setenv("JOBTRACE_RECORD_ARGUMENTS", "true")
    monkeypatch.setenv("JOBTRACE_ARGUMENTS_MAX_LENGTH", "400")
    monkeypatch.setenv("JOBTRACE_REDACT_KEYS", "IBAN, ssn")
    _provider._settings = None

    span = _run_span(runner, exporter)

    attributes: dict[str, Any] = dict(span.attributes or {})
    args = attributes["jobtrace.job.args"]
    kwargs = attributes["jobtrace.job.kwargs"]
    assert PUBLIC in args
    assert PUBLIC in kwargs
    assert "'password': '[REDACTED]'" in args
    for key, value in SECRETS.items():
        assert value not in args + kwargs, key
        assert f"'{key}': '[REDACTED]'" in kwargs, key
    assert len(kwargs) <= 400
    assert kwargs.endswith("...")
