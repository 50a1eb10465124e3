"""Reading and writing the trace context that travels in a job's message."""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

from jobtrace import _names as names
from jobtrace._delivery import quiet_logs
from jobtrace._settings import PROPAGATION_MODES

#: Maximum length of a header value that the getter passes to a propagator.
#: W3C baggage may be 8192 bytes.
MAX_HEADER_LENGTH = 8192
#: Maximum length of a traceparent or tracestate value. A W3C traceparent
#: is 55 characters, and OpenTelemetry's propagator logs a warning for every
#: value longer than 512 that it parses, so longer ones are dropped here.
MAX_TRACE_HEADER_LENGTH = 512

log = logging.getLogger(__name__)

#: Maximum number of kinds of invalid header that are logged.
_MAX_KINDS = 64
_lock = threading.Lock()
_invalid_counts: collections.Counter[tuple[str, str]] = collections.Counter()

_propagation_override: ContextVar[str | None] = ContextVar(
    "jobtrace_propagation", default=None
)
_traceparent_format = TraceContextTextMapPropagator()


class _SafeGetter(Getter[Mapping[str, Any]]):
    """Read carrier values, ignoring any that is not a short string."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        try:
            value = carrier.get(key)
        except Exception:
            return None
        if not isinstance(value, str):
            return None
        limit = MAX_TRACE_HEADER_LENGTH if key in _TRACE_KEYS else MAX_HEADER_LENGTH
        return [value] if len(value) <= limit else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        try:
            return [key for key in carrier if isinstance(key, str)]
        except Exception:
            return []


_TRACE_KEYS = frozenset({"traceparent", "tracestate"})
_getter = _SafeGetter()


_JOBTRACE_HEADERS = (
    names.SENT_AT_HEADER,
    names.PROPAGATION_HEADER,
    names.PREVIOUS_ATTEMPT_HEADER,
)
_cached_header_names: tuple[object, frozenset[str], tuple[str, ...]] | None = None
#: Prefix of the header names that :func:`private_headers` writes.
PRIVATE_PREFIX = "jobtrace_"
_private = False


def header_names() -> tuple[str, ...]:
    """Return the header names that a send writes into a job's carrier.

    These are the global propagator's fields, jobtrace's own keys, and the
    propagator's fields with the prefix of :func:`private_headers`. A
    plugin whose host spreads headers over several places reads these.
    """
    return _names()[1]


def _names() -> tuple[frozenset[str], tuple[str, ...]]:
    """Return the propagator's fields and :func:`header_names`, cached."""
    global _cached_header_names
    # opentelemetry.propagate is imported on first use, here and below, not
    # with jobtrace: it builds the propagators of OTEL_PROPAGATORS at import
    # and raises ValueError for an unknown name, which would keep
    # `jobtrace doctor` from starting to report it. The hosts'
    # instrumentation imports it before any job anyway.
    from opentelemetry import propagate

    propagator = propagate.get_global_textmap()
    cached = _cached_header_names
    if cached is not None and cached[0] is propagator:
        return cached[1], cached[2]
    # A composite propagator builds a new set of field names on every
    # access, so the names are kept until the global propagator changes.
    fields = tuple(propagator.fields)
    private = tuple(PRIVATE_PREFIX + field for field in fields)
    found = (*fields, *_JOBTRACE_HEADERS, *private)
    _cached_header_names = (propagator, frozenset(fields), found)
    return frozenset(fields), found


def private_headers(enabled: bool = True) -> None:
    """Write trace context under jobtrace's own header names from now on.

    For a process where another tracer instruments the same host and
    writes ``traceparent`` too: each would overwrite the other's context.
    With this on, a send writes ``jobtrace_traceparent`` and the other
    propagator fields with the same prefix, and leaves the standard names
    to the other tracer. Runs read the prefixed names first either way.
    """
    global _private
    _private = enabled


def inject(carrier: MutableMapping[str, Any], span: trace.Span) -> None:
    """Write the context of ``span`` into ``carrier``."""
    from opentelemetry import propagate

    span_context = trace.set_span_in_context(span)
    if not _private:
        propagate.inject(carrier, context=span_context)
        return
    written: dict[str, str] = {}
    propagate.inject(written, context=span_context)
    for field, value in written.items():
        carrier[PRIVATE_PREFIX + field] = value


def _own_fields(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``headers`` with jobtrace's prefixed fields read first.

    When a send wrote prefixed fields, the standard ones belong to another
    tracer, so they are left out.
    """
    fields, _ = _names()
    private = {
        field: headers[PRIVATE_PREFIX + field]
        for field in fields
        if PRIVATE_PREFIX + field in headers
    }
    if not private:
        return headers
    others = {key: value for key, value in headers.items() if key not in fields}
    return {**others, **private}


@contextlib.contextmanager
def propagation_mode(mode: str) -> Iterator[None]:
    """Set the propagation mode of jobs enqueued inside the block.

    ``mode`` is ``link`` or ``child``. It travels in the job's message, so it
    overrides the worker's JOBTRACE_PROPAGATION for those jobs only.
    """
    if mode not in PROPAGATION_MODES:
        raise ValueError(
            f"Invalid propagation mode {mode!r}, expected one of "
            f"{', '.join(PROPAGATION_MODES)}"
        )
    token = _propagation_override.set(mode)
    try:
        yield
    finally:
        _propagation_override.reset(token)


def snapshot(carrier: object) -> dict[str, Any]:
    """Copy a carrier into a dict, or return an empty one.

    Message headers come from any client that can write to the broker, so
    a carrier whose lookups raise is read as empty instead of failing the
    job.
    """
    if not isinstance(carrier, Mapping):
        return {}
    try:
        return dict(carrier)
    except Exception:
        return {}


def header_mode(headers: Mapping[str, Any]) -> str | None:
    """Return the propagation mode set in a message's headers, or None."""
    value = headers.get(names.PROPAGATION_HEADER)
    return value if value in PROPAGATION_MODES else None


def queue_time(
    headers: Mapping[str, Any], eta: float | None, started: float
) -> float | None:
    """Return seconds from the enqueue or ``eta``, whichever is later, to start."""
    raw = headers.get(names.SENT_AT_HEADER)
    try:
        sent_at = float(raw) if isinstance(raw, str) and len(raw) < 32 else None
    except ValueError:
        sent_at = None
    if sent_at is None or not math.isfinite(sent_at) or sent_at <= 0:
        return None
    ready_at = max(sent_at, eta) if eta is not None else sent_at
    # Clocks of the producer and worker hosts may disagree by a little.
    return max(0.0, started - ready_at)


def parse_traceparent(value: object) -> trace.SpanContext | None:
    """Return the span context of a W3C traceparent string, or None."""
    if not isinstance(value, str) or len(value) > MAX_TRACE_HEADER_LENGTH:
        return None
    extracted = _traceparent_format.extract({"traceparent": value})
    span_context = trace.get_current_span(extracted).get_span_context()
    return span_context if span_context.is_valid else None


def extract(headers: Mapping[str, Any]) -> Context:
    """Return the context that ``headers`` carry, ignoring invalid values.

    OpenTelemetry's propagators log a WARNING for each invalid tracestate
    or baggage value they read, which would be a line per job. Those
    records are held back, and jobtrace logs the first of each kind.
    """
    from opentelemetry import propagate

    with quiet_logs() as held:
        extracted = propagate.extract(_own_fields(headers), getter=_getter)
    if held:
        _report_invalid(held)
    return extracted


def _report_invalid(held: list[logging.LogRecord]) -> None:
    for record in held:
        # The template, without its arguments, which are message content.
        template = str(record.msg)
        kind = (record.name, template)
        with _lock:
            _invalid_counts[kind] += 1
            first = _invalid_counts[kind] == 1 and len(_invalid_counts) <= _MAX_KINDS
        if first:
            log.warning(
                "Ignored an invalid trace header in a job's message (%s: %s); "
                "later ones of this kind are only counted",
                record.name,
                template,
            )


def invalid_header_counts() -> dict[tuple[str, str], int]:
    """Return how often each kind of invalid trace header was read so far."""
    with _lock:
        return dict(_invalid_counts)


def override_mode() -> str | None:
    """Return the mode set by an enclosing :func:`propagation_mode`."""
    return _propagation_override.get()


def traceparent_of(span: trace.Span) -> str | None:
    """Return the W3C traceparent string of ``span``, or None."""
    written: dict[str, str] = {}
    _traceparent_format.inject(written, context=trace.set_span_in_context(span))
    return written.get("traceparent")
