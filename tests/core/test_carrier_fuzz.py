"""Carrier extraction fuzzed with hypothesis: any headers make a root run.

Message headers come from any client that can write to the broker. For
every carrier that hypothesis generates, reading it never raises, a job
runs as a new root unless the carrier contains a valid traceparent, and the
logs get at most one line per kind of invalid header.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import Job, Outcome, _carrier, _guard, _provider

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEADER_NAMES = (
    "traceparent",
    "tracestate",
    "baggage",
    "jobtrace_sent_at",
    "jobtrace_propagation",
    "jobtrace_previous_attempt",
)

_hex = st.text(alphabet="0123456789abcdef", min_size=0, max_size=40)
#: Strings near the W3C formats, which reach deeper into the parsers than
#: random text does.
_near_traceparent = st.builds(
    lambda version, trace_id, span_id, flags: f"{version}-{trace_id}-{span_id}-{flags}",
    _hex,
    _hex,
    _hex,
    _hex,
)
_baggage = st.lists(
    st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=200
).map(lambda pairs: ",".join(f"{key}={value}" for key, value in pairs))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=600),
    st.binary(max_size=64),
    _near_traceparent,
    _baggage,
    st.sampled_from(["link", "child", TRACEPARENT, "", "nan", "inf", "-1e309"]),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=10,
)
_keys = st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=20))
carriers = st.one_of(
    st.dictionaries(_keys, _values, max_size=8),
    st.none(),
    _values,
)


class RaisingMapping(Mapping[str, Any]):
    """A mapping whose every lookup raises, like a broken message object."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("broken lookup")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("broken iteration")

    def __len__(self) -> int:
        return 3


@pytest.fixture(scope="module")
def memory() -> Iterator[InMemorySpanExporter]:
    """Hand jobtrace a provider that keeps spans in memory, for the module."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    _provider._reset_for_tests()
    jobtrace.configure(tracer_provider=provider)
    yield exported
    _provider._reset_for_tests()


def _valid_traceparent(carrier: object) -> bool:
    if not isinstance(carrier, Mapping):
        return False
    value = carrier.get("traceparent")
    return _carrier.parse_traceparent(value) is not None


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(carrier=carriers)
def test_fuzzed_carrier_runs_as_root(
    carrier: object, memory: InMemorySpanExporter
) -> None:
    """Any carrier gives a root process span, linked only to a valid send."""
    memory.clear()
    _guard.reset_error_counts()

    run = jobtrace.begin_run(Job(system="fuzz", name="fuzz.job", id="j"), carrier)  # type: ignore[arg-type]
    jobtrace.end_run(run, Outcome.SUCCESS)

    (span,) = memory.get_finished_spans()
    attributes = span.attributes or {}
    queue_time = attributes.get("jobtrace.job.queue_time")
    assert span.parent is None
    send_links = [
        link
        for link in span.links
        if (link.attributes or {}).get("jobtrace.link.type") == "send"
    ]
    assert all(link.context.is_valid for link in span.links)
    assert bool(send_links) == _valid_traceparent(carrier)
    assert queue_time is None or (
        isinstance(queue_time, float) and math.isfinite(queue_time) and queue_time >= 0
    )
    assert jobtrace.error_counts() == {}
    assert not trace.get_current_span().get_span_context().is_valid


@FUZZ
@given(carrier=carriers)
def test_fuzzed_carrier_child_mode(carrier: object) -> None:
    """In child mode, only a valid traceparent gives the run a parent."""
    headers = _carrier.snapshot(carrier)

    extracted = _carrier.extract(headers)

    span_context = trace.get_current_span(extracted).get_span_context()
    assert span_context.is_valid == _valid_traceparent(headers)


def test_raising_mapping_reads_empty() -> None:
    """A carrier whose lookups raise is read as empty."""
    headers = _carrier.snapshot(RaisingMapping())

    assert headers == {}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"baggage": ",".join(f"k{n}=v" for n in range(300))}, id="300"),
        pytest.param({"baggage": "k=" + "v" * 5000}, id="5000-bytes"),
        pytest.param({"baggage": "k=" + "v" * 9000}, id="over-limit"),
        pytest.param({"baggage": "garbage"}, id="garbage"),
        pytest.param({"traceparent": TRACEPARENT, "tracestate": "!!!,=,a=b=c"}),
    ],
)
def test_bad_baggage_logged_once(
    headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Ten jobs with the same bad header log one line, none from OpenTelemetry."""
    caplog.set_level(logging.WARNING)

    for _ in range(10):
        _carrier.extract(headers)

    otel = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    mine = [r for r in caplog.records if r.name.startswith("jobtrace")]
    assert otel == []
    assert len(mine) <= 1
