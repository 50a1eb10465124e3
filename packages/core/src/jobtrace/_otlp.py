"""Decoding of OTLP protobuf spans into plain Python values."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

#: Span kinds as OTLP numbers them. OTLP allows a receiver to read
#: SPAN_KIND_UNSPECIFIED (0) as INTERNAL.
_KINDS = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS_CODES = {
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
}


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it from an OTLP export request.

    IDs are lower-case hex strings. Attribute values are Python values:
    str, int, float, bool, bytes, a list for an array and a dict for a
    key-value list. ``events`` contains ``(name, attributes)`` pairs,
    ``links`` contains ``(trace_id, span_id, attributes)`` triples and
    ``resource`` contains the attributes of the resource that exported the span.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, object]
    status_code: str
    status_message: str
    events: tuple[tuple[str, dict[str, object]], ...] = ()
    links: tuple[tuple[str, str, dict[str, object]], ...] = ()
    resource: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """The time between the span's start and end, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9


def decode_span(span: Span, resource: dict[str, object]) -> ReceivedSpan:
    """Convert one protobuf span into a :class:`ReceivedSpan`."""
    kind = _KINDS[span.kind] if span.kind < len(_KINDS) else "INTERNAL"
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() if any(span.parent_span_id) else None,
        name=span.name,
        kind=kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=decode_attributes(span.attributes),
        status_code=_STATUS_CODES.get(span.status.code, "UNSET"),
        status_message=span.status.message,
        events=tuple(
            (event.name, decode_attributes(event.attributes)) for event in span.events
        ),
        links=tuple(
            (
                link.trace_id.hex(),
                link.span_id.hex(),
                decode_attributes(link.attributes),
            )
            for link in span.links
        ),
        resource=dict(resource),
    )


@dataclasses.dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point as the receiver decoded it.

    ``kind`` is ``sum``, ``gauge`` or ``histogram``. For a histogram,
    ``value`` is the sum of the recorded values and ``count`` is their
    number. For a sum or gauge, ``value`` is the point's value and ``count``
    is None.
    ``series`` identifies the time series: metric name, point attributes and
    resource attributes.
    """

    name: str
    unit: str
    kind: str
    attributes: dict[str, object]
    resource: dict[str, object]
    value: float
    count: int | None
    bucket_counts: tuple[int, ...]
    explicit_bounds: tuple[float, ...]
    time_ns: int

    @property
    def series(self) -> tuple[str, str, str]:
        """The metric name and the sorted point and resource attributes."""
        return (
            self.name,
            repr(sorted(self.attributes.items())),
            repr(sorted(self.resource.items())),
        )


def decode_metric(metric: Metric, resource: dict[str, object]) -> list[ReceivedPoint]:
    """Decode the data points of one OTLP metric."""
    kind = metric.WhichOneof("data")
    points: list[ReceivedPoint] = []
    if kind in ("sum", "gauge"):
        for point in getattr(metric, kind).data_points:
            number = point.as_double if point.HasField("as_double") else point.as_int
            points.append(
                ReceivedPoint(
                    name=metric.name,
                    unit=metric.unit,
                    kind=kind,
                    attributes=decode_attributes(point.attributes),
                    resource=resource,
                    value=float(number),
                    count=None,
                    bucket_counts=(),
                    explicit_bounds=(),
                    time_ns=point.time_unix_nano,
                )
            )
    elif kind == "histogram":
        for point in metric.histogram.data_points:
            points.append(
                ReceivedPoint(
                    name=metric.name,
                    unit=metric.unit,
                    kind=kind,
                    attributes=decode_attributes(point.attributes),
                    resource=resource,
                    value=point.sum,
                    count=point.count,
                    bucket_counts=tuple(point.bucket_counts),
                    explicit_bounds=tuple(point.explicit_bounds),
                    time_ns=point.time_unix_nano,
                )
            )
    return points


def decode_attributes(attributes: Iterable[KeyValue]) -> dict[str, object]:
    """Convert OTLP key-values into a dict of Python values."""
    return {attribute.key: _decode_value(attribute.value) for attribute in attributes}


def _decode_value(value: AnyValue) -> object:
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [_decode_value(item) for item in value.array_value.values]
    if field == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, field)
