"""Plain-text trees of received spans, for printing in a terminal.

:func:`format_traces` draws each trace as a tree with box-drawing
characters and no colour codes, so the output reads the same in a
terminal, a log file and a test assertion.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from jobtrace._names import ERROR_TYPE, JOB_OUTCOME, LINK_TYPE
from jobtrace._provider import COMPONENT_ATTRIBUTE
from jobtrace._receiver import ReceivedSpan

log = logging.getLogger(__name__)

_BRANCH = "├─ "
_LAST_BRANCH = "└─ "
_CONTINUE = "│  "
_BLANK = "   "
_SHORT_TRACE_ID_LENGTH = 8


def format_traces(spans: Iterable[ReceivedSpan]) -> str:
    """Render spans as one indented tree per trace, without a final newline.

    Traces appear in the order of their earliest start time, and children
    sit under their parent in order of start time. A span whose parent was
    not received is drawn as a root of its trace and marked
    ``(remote parent)``. Each line shows the name, the duration, the
    ``jobtrace.job.outcome`` attribute, the resource's
    ``jobtrace.component`` and ``ERROR`` with ``error.type`` for a span
    with status ERROR. Each link gets a line below its span, with the
    linked span's name when that span was received too. Traces are
    separated by a blank line, and no spans give an empty string.
    """
    ordered = sorted(spans, key=lambda span: span.start_ns)
    by_id = {(span.trace_id, span.span_id): span for span in ordered}
    traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in ordered:
        traces[span.trace_id].append(span)

    blocks = [
        _format_trace(trace_id, members, by_id) for trace_id, members in traces.items()
    ]
    return "\n\n".join(blocks)


def _format_trace(
    trace_id: str,
    spans: list[ReceivedSpan],
    by_id: dict[tuple[str, str], ReceivedSpan],
) -> str:
    tree = _TraceTree(spans, by_id)
    roots = tree.roots()
    count = f"{len(spans)} span" if len(spans) == 1 else f"{len(spans)} spans"
    lines = [f"trace {trace_id} ({count})"]
    for position, (root, note) in enumerate(roots):
        lines.extend(tree.draw(root, note, position == len(roots) - 1))
    return "\n".join(lines)


class _TraceTree:
    """The spans of one trace, indexed by parent, ready to draw.

    Walks use an explicit stack, so a deep trace cannot exceed Python's
    recursion limit, and they visit each span once even when parent ids
    form a cycle. Spans are tracked by ``id()`` because two received
    spans may share a span id.
    """

    def __init__(
        self, spans: list[ReceivedSpan], by_id: dict[tuple[str, str], ReceivedSpan]
    ) -> None:
        self.spans = spans
        self.by_id = by_id
        self.span_ids = {span.span_id for span in spans}
        self.children: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in spans:
            if span.parent_span_id in self.span_ids:
                self.children[span.parent_span_id].append(span)
        self.drawn: set[int] = set()

    def roots(self) -> list[tuple[ReceivedSpan, str | None]]:
        """Return the spans to draw at the top level, each with its note."""
        roots: list[tuple[ReceivedSpan, str | None]] = []
        for span in self.spans:
            if span.parent_span_id is None:
                roots.append((span, None))
            elif span.parent_span_id not in self.span_ids:
                roots.append((span, "remote parent"))

        # Spans whose parent ids form a cycle are unreachable from the roots
        # above. Each cycle gets a root too, so every span is drawn once.
        reached: set[int] = set()
        for root, _ in roots:
            self._collect(root, reached)
        for span in self.spans:
            if id(span) not in reached:
                roots.append((span, "parent cycle"))
                self._collect(span, reached)
        return roots

    def _collect(self, root: ReceivedSpan, reached: set[int]) -> None:
        stack = [root]
        while stack:
            span = stack.pop()
            if id(span) not in reached:
                reached.add(id(span))
                stack.extend(self.children.get(span.span_id, []))

    def draw(self, root: ReceivedSpan, note: str | None, last: bool) -> list[str]:
        """Draw ``root`` and the spans below it that are not drawn yet."""
        lines: list[str] = []
        stack = [(root, "", last, note)]
        while stack:
            span, prefix, last, note = stack.pop()
            if id(span) in self.drawn:
                continue
            self.drawn.add(id(span))

            unvisited_children = [
                child
                for child in self.children.get(span.span_id, [])
                if id(child) not in self.drawn
            ]
            branch = _LAST_BRANCH if last else _BRANCH
            lines.append(prefix + branch + _describe(span, note))
            inner = prefix + (_BLANK if last else _CONTINUE)
            link_prefix = inner + ("│ " if unvisited_children else "  ")
            for link in span.links:
                lines.append(link_prefix + _describe_link(link, self.by_id))

            for position in reversed(range(len(unvisited_children))):
                is_last = position == len(unvisited_children) - 1
                stack.append((unvisited_children[position], inner, is_last, None))
        return lines


def _describe(span: ReceivedSpan, note: str | None) -> str:
    parts = [span.name if note is None else f"{span.name} ({note})"]
    parts.append(_format_duration(span.end_ns - span.start_ns))

    outcome = span.attributes.get(JOB_OUTCOME)
    if outcome is not None:
        parts.append(f"outcome={outcome}")
    component = span.resource.get(COMPONENT_ATTRIBUTE)
    if component is not None:
        parts.append(f"component={component}")

    if span.status_code == "ERROR":
        error_type = span.attributes.get(ERROR_TYPE)
        parts.append("ERROR" if error_type is None else f"ERROR {error_type}")
    return "  ".join(parts)


def _describe_link(
    link: tuple[str, str, dict[str, object]],
    by_id: dict[tuple[str, str], ReceivedSpan],
) -> str:
    trace_id, span_id, attributes = link
    target = by_id.get((trace_id, span_id))
    if target is not None:
        text = f"↳ linked to {target.name} (trace {trace_id[:_SHORT_TRACE_ID_LENGTH]}…)"
    else:
        text = f"↳ linked to span {span_id} (trace {trace_id})"

    link_type = attributes.get(LINK_TYPE)
    return text if link_type is None else f"{text} as {link_type}"


def _format_duration(duration_ns: int) -> str:
    seconds = duration_ns / 1e9
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{duration_ns / 1e6:.1f} ms"
