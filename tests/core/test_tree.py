"""Tests for the terminal tree of received spans."""

from __future__ import annotations

import pytest

from jobtrace._receiver import ReceivedSpan
from jobtrace._tree import format_traces

TRACE_A = "a" * 32
TRACE_B = "b" * 32
MS = 1_000_000


def make_span(
    span_id: str,
    name: str,
    parent: str | None = None,
    *,
    trace_id: str = TRACE_A,
    start_ms: float = 0,
    duration_ms: float = 1,
    attributes: dict[str, object] | None = None,
    status_code: str = "UNSET",
    links: tuple[tuple[str, str, dict[str, object]], ...] = (),
    component: str | None = None,
) -> ReceivedSpan:
    """Build a span with 16-character ids made by repeating ``span_id``."""
    start_ns = int(start_ms * MS)
    return ReceivedSpan(
        trace_id=trace_id,
        span_id=span_id * 16,
        parent_span_id=None if parent is None else parent * 16,
        name=name,
        kind="INTERNAL",
        start_ns=start_ns,
        end_ns=start_ns + int(duration_ms * MS),
        attributes=attributes or {},
        status_code=status_code,
        status_message="",
        links=links,
        resource={} if component is None else {"jobtrace.component": component},
    )


def test_parent_child_tree() -> None:
    """A chain of three spans is drawn as nested branches under a header."""
    spans = [
        make_span("1", "send add"),
        make_span("2", "process add", "1", start_ms=1),
        make_span("3", "query", "2", start_ms=2),
    ]

    lines = format_traces(spans).splitlines()

    assert lines[0] == f"trace {TRACE_A} (3 spans)"
    assert lines[1] == "└─ send add  1.0 ms"
    assert lines[2] == "   └─ process add  1.0 ms"
    assert lines[3] == "      └─ query  1.0 ms"
    assert len(lines) == 4


def test_siblings_ordered_by_start() -> None:
    """Children appear in start order, and inner branches keep their bar."""
    spans = [
        make_span("1", "root", duration_ms=10),
        make_span("3", "second", "1", start_ms=5),
        make_span("2", "first", "1", start_ms=1),
        make_span("4", "inside first", "2", start_ms=2),
    ]

    lines = format_traces(spans).splitlines()

    assert lines[1] == "└─ root  10.0 ms"
    assert lines[2] == "   ├─ first  1.0 ms"
    assert lines[3] == "   │  └─ inside first  1.0 ms"
    assert lines[4] == "   └─ second  1.0 ms"


def test_traces_ordered_by_start() -> None:
    """Traces are printed in start order and separated by a blank line."""
    spans = [
        make_span("1", "late", start_ms=50),
        make_span("2", "early", trace_id=TRACE_B, start_ms=10),
    ]

    blocks = format_traces(spans).split("\n\n")

    assert len(blocks) == 2
    assert blocks[0].startswith(f"trace {TRACE_B} (1 span)\n└─ early")
    assert blocks[1].startswith(f"trace {TRACE_A} (1 span)\n└─ late")


def test_remote_parent_marked() -> None:
    """A span whose parent was not received is a root marked remote parent."""
    spans = [
        make_span("1", "local root"),
        make_span("2", "process add", "9", start_ms=1),
    ]

    lines = format_traces(spans).splitlines()

    assert lines[1] == "├─ local root  1.0 ms"
    assert lines[2] == "└─ process add (remote parent)  1.0 ms"


@pytest.mark.parametrize(
    ("duration_ms", "expected"),
    [
        (0.04, "0.0 ms"),
        (1.26, "1.3 ms"),
        (9_999, "9999.0 ms"),
        (10_000, "10.0 s"),
        (75_240, "75.2 s"),
    ],
)
def test_duration_units(duration_ms: float, expected: str) -> None:
    """Durations under 10 s are in ms with one decimal, longer ones in s."""
    span = make_span("1", "job", duration_ms=duration_ms)

    line = format_traces([span]).splitlines()[1]

    assert line == f"└─ job  {expected}"


def test_outcome_component_and_error_type() -> None:
    """A failed job shows its outcome, its component and ERROR with the type."""
    span = make_span(
        "1",
        "process add",
        attributes={"jobtrace.job.outcome": "failure", "error.type": "ValueError"},
        status_code="ERROR",
        component="worker",
    )

    line = format_traces([span]).splitlines()[1]

    assert line == (
        "└─ process add  1.0 ms  outcome=failure  component=worker  ERROR ValueError"
    )


def test_error_without_type() -> None:
    """A span with status ERROR and no error.type shows ERROR alone."""
    span = make_span("1", "job", status_code="ERROR")

    line = format_traces([span]).splitlines()[1]

    assert line == "└─ job  1.0 ms  ERROR"


def test_error_type_needs_error_status() -> None:
    """error.type alone does not mark a span whose status is not ERROR."""
    span = make_span("1", "job", attributes={"error.type": "Retry"}, status_code="OK")

    line = format_traces([span]).splitlines()[1]

    assert line == "└─ job  1.0 ms"


def test_link_to_received_span_named() -> None:
    """A link to a received span shows that span's name and a short trace id."""
    spans = [
        make_span("1", "send add"),
        make_span(
            "2",
            "process add",
            trace_id=TRACE_B,
            start_ms=1,
            links=((TRACE_A, "1" * 16, {}),),
        ),
    ]

    lines = format_traces(spans).splitlines()

    assert lines[-2] == "└─ process add  1.0 ms"
    assert lines[-1] == "     ↳ linked to send add (trace aaaaaaaa…)"


def test_link_to_missing_span_shows_ids() -> None:
    """A link to a span that was not received shows both full ids."""
    link = (TRACE_B, "f" * 16, {"jobtrace.link.type": "previous_attempt"})
    span = make_span("1", "process add", links=(link,))

    lines = format_traces([span]).splitlines()

    assert lines[2] == (
        f"     ↳ linked to span {'f' * 16} (trace {TRACE_B}) as previous_attempt"
    )


def test_link_line_above_children() -> None:
    """The link line of a span with children carries the bar down to them."""
    spans = [
        make_span("1", "send add"),
        make_span("2", "process add", links=((TRACE_A, "1" * 16, {}),), start_ms=1),
        make_span("3", "query", "2", start_ms=2),
    ]

    lines = format_traces(spans).splitlines()

    assert lines[2] == "└─ process add  1.0 ms"
    assert lines[3] == "   │ ↳ linked to send add (trace aaaaaaaa…)"
    assert lines[4] == "   └─ query  1.0 ms"


def test_parent_cycle_drawn_once() -> None:
    """Spans whose parents form a cycle are each drawn once, under a note."""
    spans = [
        make_span("1", "first", "2"),
        make_span("2", "second", "1", start_ms=1),
        make_span("3", "self", "3", start_ms=2),
    ]

    lines = format_traces(spans).splitlines()

    assert lines[1] == "├─ first (parent cycle)  1.0 ms"
    assert lines[2] == "│  └─ second  1.0 ms"
    assert lines[3] == "└─ self (parent cycle)  1.0 ms"
    assert len(lines) == 4


def test_deep_trace_drawn() -> None:
    """A chain deeper than the recursion limit is drawn without an error."""
    depth = 1_500
    spans = [
        ReceivedSpan(
            TRACE_A,
            f"{index:016x}",
            None if index == 0 else f"{index - 1:016x}",
            f"level {index}",
            "INTERNAL",
            index,
            index + MS,
            {},
            "UNSET",
            "",
        )
        for index in range(depth)
    ]

    lines = format_traces(spans).splitlines()

    assert len(lines) == depth + 1
    assert lines[-1].endswith("└─ level 1499  1.0 ms")


def test_no_spans_empty_text() -> None:
    """No spans give an empty string."""
    assert format_traces([]) == ""


def test_output_has_no_escape_codes() -> None:
    """The output contains no terminal escape sequences."""
    span = make_span("1", "job", status_code="ERROR", component="web")

    assert "\x1b" not in format_traces([span])
