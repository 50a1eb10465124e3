"""Tests for the OTLP/HTTP receiver, fed by the real OpenTelemetry exporter."""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from jobtrace._receiver import Fault, OtlpReceiver, ReceivedSpan

PROTOBUF = {"Content-Type": "application/x-protobuf"}
MakeTracer = Callable[..., trace.Tracer]


@pytest.fixture(autouse=True)
def _bypass_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every request of these tests on 127.0.0.1, even with a proxy set."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def make_tracer() -> Iterator[MakeTracer]:
    """A factory for tracers that export each span at its end over OTLP/HTTP."""
    providers: list[TracerProvider] = []

    def make(endpoint: str, compression: Compression | None = None) -> trace.Tracer:
        resource = Resource.create(
            {"service.name": "shop", "jobtrace.component": "worker"}
        )
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        exporter = OTLPSpanExporter(
            endpoint=endpoint + "/v1/traces", compression=compression, timeout=5
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        return provider.get_tracer("tests.receiver")

    yield make
    for provider in providers:
        provider.shutdown()


def post(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """POST ``body`` and return the status and the response body."""
    request = urllib.request.Request(
        url, body, PROTOBUF if headers is None else headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def export_one_span(tracer: trace.Tracer, name: str) -> None:
    """End one span, which the simple processor exports at once."""
    tracer.start_span(name).end()


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    """Index spans by name. The tests give every span a unique name."""
    return {span.name: span for span in spans}


def test_exported_spans_decoded(
    receiver: OtlpReceiver, make_tracer: MakeTracer
) -> None:
    """A parent, a child with a link, an exception and an error arrive intact."""
    tracer = make_tracer(receiver.endpoint)
    parent = tracer.start_span(
        "send add",
        kind=trace.SpanKind.PRODUCER,
        attributes={"text": "a", "count": 3, "ratio": 0.5, "flag": True},
        start_time=1_000,
    )
    parent.end(end_time=5_000)
    context = trace.set_span_in_context(parent)
    child = tracer.start_span(
        "process add",
        context=context,
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(parent.get_span_context(), {"jobtrace.link.type": "send"})],
        attributes={"sizes": [1, 2], "error.type": "ValueError"},
        start_time=10_000,
    )
    child.record_exception(ValueError("boom"), attributes={"extra": "x"})
    child.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
    child.end(end_time=2_000_010_000)

    spans = by_name(receiver.wait_for_spans(2, timeout=5))
    sent, processed = spans["send add"], spans["process add"]
    parent_context = parent.get_span_context()
    assert sent.trace_id == f"{parent_context.trace_id:032x}"
    assert sent.span_id == f"{parent_context.span_id:016x}"
    assert sent.parent_span_id is None
    assert sent.kind == "PRODUCER"
    assert sent.start_ns == 1_000
    assert sent.end_ns == 5_000
    assert sent.attributes == {"text": "a", "count": 3, "ratio": 0.5, "flag": True}
    assert sent.status_code == "UNSET"
    assert sent.events == ()
    assert sent.links == ()

    assert processed.trace_id == sent.trace_id
    assert processed.parent_span_id == sent.span_id
    assert processed.kind == "CONSUMER"
    assert processed.attributes == {"sizes": [1, 2], "error.type": "ValueError"}
    assert processed.duration_s == pytest.approx(2.0)
    assert processed.status_code == "ERROR"
    assert processed.status_message == "boom"
    assert processed.links == (
        (sent.trace_id, sent.span_id, {"jobtrace.link.type": "send"}),
    )

    event_name, event_attributes = processed.events[0]
    assert len(processed.events) == 1
    assert event_name == "exception"
    assert event_attributes["exception.type"] == "ValueError"
    assert event_attributes["exception.message"] == "boom"
    assert event_attributes["extra"] == "x"

    assert processed.resource["service.name"] == "shop"
    assert processed.resource["jobtrace.component"] == "worker"
    assert receiver.request_count() == 2


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (trace.SpanKind.INTERNAL, "INTERNAL"),
        (trace.SpanKind.SERVER, "SERVER"),
        (trace.SpanKind.CLIENT, "CLIENT"),
        (trace.SpanKind.PRODUCER, "PRODUCER"),
        (trace.SpanKind.CONSUMER, "CONSUMER"),
    ],
)
def test_span_kind_decoded(
    receiver: OtlpReceiver,
    make_tracer: MakeTracer,
    kind: trace.SpanKind,
    expected: str,
) -> None:
    """Each SDK span kind arrives as its upper-case name."""
    make_tracer(receiver.endpoint).start_span("kind", kind=kind).end()

    (span,) = receiver.wait_for_spans(1, timeout=5)
    assert span.kind == expected


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_compressed_export_decoded(
    receiver: OtlpReceiver, make_tracer: MakeTracer, compression: Compression
) -> None:
    """Exports compressed with gzip or deflate are decoded like plain ones."""
    tracer = make_tracer(receiver.endpoint, compression=compression)
    export_one_span(tracer, "compressed")

    spans = receiver.wait_for_spans(1, timeout=5)
    assert [span.name for span in spans] == ["compressed"]


def test_hand_built_request_decoded(receiver: OtlpReceiver) -> None:
    """Values the SDK never sends (maps, bytes, unset kind, zero parent) decode."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes(range(16))
    span.span_id = bytes(range(8))
    span.parent_span_id = bytes(8)
    span.name = "raw"
    span.kind = Span.SPAN_KIND_UNSPECIFIED
    nested = AnyValue()
    nested.kvlist_value.values.append(KeyValue(key="k", value=AnyValue(int_value=7)))
    span.attributes.append(KeyValue(key="map", value=nested))
    span.attributes.append(KeyValue(key="raw", value=AnyValue(bytes_value=b"\x01")))
    span.attributes.append(KeyValue(key="empty", value=AnyValue()))

    status, _ = post(receiver.endpoint + "/v1/traces", request.SerializeToString())

    (received,) = receiver.spans()
    assert status == 200
    assert received.trace_id == "000102030405060708090a0b0c0d0e0f"
    assert received.span_id == "0001020304050607"
    assert received.parent_span_id is None
    assert received.kind == "INTERNAL"
    assert received.attributes == {"map": {"k": 7}, "raw": b"\x01", "empty": None}
    assert received.status_code == "UNSET"
    assert received.resource == {}


def test_empty_export_accepted(
    receiver: OtlpReceiver,
) -> None:
    """An accepted export gets 200 and an empty protobuf response body."""
    status, body = post(receiver.endpoint + "/v1/traces", b"")

    assert status == 200
    assert body == b""
    assert receiver.request_count("/v1/traces") == 1
    assert receiver.spans() == []


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"\xff\xff\xff", PROTOBUF),
        (b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}),
        (gzip.compress(b"\x0a\x05\x12"), {**PROTOBUF, "Content-Encoding": "gzip"}),
    ],
    ids=["protobuf", "gzip", "gzipped-protobuf"],
)
def test_malformed_body_rejected(
    receiver: OtlpReceiver, body: bytes, headers: dict[str, str]
) -> None:
    """A body that cannot be decoded gets 400 and the server keeps serving."""
    status, message = post(receiver.endpoint + "/v1/traces", body, headers)
    status_after, _ = post(receiver.endpoint + "/v1/traces", b"")

    assert status == 400
    assert message.startswith(b"invalid")
    assert status_after == 200
    assert receiver.request_count() == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {**PROTOBUF, "Content-Encoding": "br"},
    ],
    ids=["json", "brotli"],
)
def test_unsupported_encoding_rejected(
    receiver: OtlpReceiver, headers: dict[str, str]
) -> None:
    """JSON bodies and unknown content encodings get 415."""
    status, message = post(receiver.endpoint + "/v1/traces", b"{}", headers)

    assert status == 415
    assert message.startswith(b"unsupported")
    assert receiver.request_count() == 0


def test_unknown_path_not_found(receiver: OtlpReceiver) -> None:
    """A POST to a path outside OTLP gets 404 and is not counted."""
    status, message = post(receiver.endpoint + "/v1/profiles", b"")

    assert status == 404
    assert message.startswith(b"path /v1/profiles not found")
    assert receiver.request_count("/v1/profiles") == 0


def test_missing_content_length_rejected(receiver: OtlpReceiver) -> None:
    """A request without Content-Length, as chunked bodies are sent, gets 411."""
    port = int(receiver.endpoint.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("POST", "/v1/traces")
        connection.putheader("Content-Type", "application/x-protobuf")
        connection.endheaders()
        status = connection.getresponse().status
    finally:
        connection.close()

    assert status == 411
    assert receiver.request_count() == 0


def test_metrics_and_logs_counted(receiver: OtlpReceiver) -> None:
    """Metrics and logs exports get 200 and are only counted."""
    metrics_status, _ = post(receiver.endpoint + "/v1/metrics", b"\x0a\x00")
    logs_status, _ = post(receiver.endpoint + "/v1/logs", b"\x0a\x00")
    post(receiver.endpoint + "/v1/logs", b"")

    assert metrics_status == 200
    assert logs_status == 200
    assert receiver.request_count("/v1/metrics") == 1
    assert receiver.request_count("/v1/logs") == 2
    assert receiver.request_count("/v1/traces") == 0
    assert receiver.spans() == []


def test_forwarding_to_second_receiver(make_tracer: MakeTracer) -> None:
    """Each accepted request reaches the forward_to receiver with its encoding."""
    with (
        OtlpReceiver() as downstream,
        OtlpReceiver(forward_to=downstream.endpoint + "/") as upstream,
    ):
        tracer = make_tracer(upstream.endpoint, compression=Compression.Gzip)
        export_one_span(tracer, "forwarded")
        post(upstream.endpoint + "/v1/metrics", b"")
        forwarded = downstream.wait_for_spans(1, timeout=5)
        received = upstream.spans()

    assert [span.name for span in forwarded] == ["forwarded"]
    assert forwarded == received
    assert downstream.request_count("/v1/traces") == 1
    assert downstream.request_count("/v1/metrics") == 1
    assert upstream.forward_failures == 0


def test_forward_failure_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Failed forwards keep the 200 response and log one warning in total."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    forwarding = OtlpReceiver(forward_to=f"http://127.0.0.1:{closed_port}")

    with forwarding, caplog.at_level(logging.WARNING, logger="jobtrace._receiver"):
        first, _ = post(forwarding.endpoint + "/v1/traces", b"")
        second, _ = post(forwarding.endpoint + "/v1/traces", b"")

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert first == 200
    assert second == 200
    assert forwarding.forward_failures == 2
    assert len(warnings) == 1
    assert str(closed_port) in warnings[0].getMessage()


def test_wait_for_wakes_on_arrival(
    receiver: OtlpReceiver, make_tracer: MakeTracer
) -> None:
    """wait_for returns once a span exported from another thread arrives."""
    tracer = make_tracer(receiver.endpoint)
    timer = threading.Timer(0.2, export_one_span, args=(tracer, "late"))
    timer.start()

    spans = receiver.wait_for(lambda spans: len(spans) == 1, timeout=5)
    timer.join()

    assert [span.name for span in spans] == ["late"]


def test_wait_for_spans_filters_prefix(
    receiver: OtlpReceiver, make_tracer: MakeTracer
) -> None:
    """wait_for_spans counts and returns only names with the prefix."""
    tracer = make_tracer(receiver.endpoint)
    for name in ["celery send a", "other", "celery send b"]:
        export_one_span(tracer, name)

    spans = receiver.wait_for_spans(2, timeout=5, name_prefix="celery send")

    assert sorted(span.name for span in spans) == ["celery send a", "celery send b"]


def test_wait_for_timeout_message(
    receiver: OtlpReceiver, make_tracer: MakeTracer
) -> None:
    """The TimeoutError names the condition and the spans received so far."""
    export_one_span(make_tracer(receiver.endpoint), "only")
    receiver.wait_for_spans(1, timeout=5)

    with pytest.raises(TimeoutError) as raised:
        receiver.wait_for_spans(3, timeout=0.1, name_prefix="run")

    message = str(raised.value)
    assert "3 spans named 'run'" in message
    assert "has 1 spans: only" in message


def test_timeout_message_truncates_names(
    receiver: OtlpReceiver, make_tracer: MakeTracer
) -> None:
    """Only the first ten span names are listed in a TimeoutError."""
    tracer = make_tracer(receiver.endpoint)
    for index in range(12):
        export_one_span(tracer, f"span-{index}")
    receiver.wait_for_spans(12, timeout=5)

    with pytest.raises(TimeoutError) as raised:
        receiver.wait_for(lambda spans: False, timeout=0.05)

    message = str(raised.value)
    assert "span-9" in message
    assert "span-10" not in message
    assert "and 2 more" in message


def test_clear_forgets_spans_and_counts(
    receiver: OtlpReceiver, make_tracer: MakeTracer
) -> None:
    """clear empties the span list and the request counts."""
    export_one_span(make_tracer(receiver.endpoint), "gone")
    receiver.wait_for_spans(1, timeout=5)

    receiver.clear()

    assert receiver.spans() == []
    assert receiver.request_count() == 0


def test_spans_returns_copy(receiver: OtlpReceiver) -> None:
    """Changing the list from spans() does not change the receiver."""
    receiver.spans().append(
        ReceivedSpan("a", "b", None, "x", "INTERNAL", 0, 0, {}, "UNSET", "")
    )

    assert receiver.spans() == []


def test_lifecycle_errors() -> None:
    """endpoint needs a started receiver, and start cannot run twice."""
    receiver = OtlpReceiver()
    with pytest.raises(RuntimeError, match="not started"):
        _ = receiver.endpoint

    receiver.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            receiver.start()
    finally:
        receiver.stop()
    receiver.stop()


def test_stop_closes_port() -> None:
    """After the context manager exits, the port refuses connections."""
    with OtlpReceiver() as receiver:
        port = int(receiver.endpoint.rsplit(":", 1)[1])
        status, _ = post(receiver.endpoint + "/v1/traces", b"")

    assert status == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_fault_status_and_retry_after(receiver: OtlpReceiver) -> None:
    """A status fault responds to every request with it and stores nothing."""
    receiver.set_fault(Fault(status=429, retry_after="7"))
    request = urllib.request.Request(
        receiver.endpoint + "/v1/traces", b"", PROTOBUF, method="POST"
    )

    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)

    assert raised.value.code == 429
    assert raised.value.headers["Retry-After"] == "7"
    assert receiver.faulted_requests == 1
    assert receiver.request_count() == 0


def test_hang_fault_released(receiver: OtlpReceiver) -> None:
    """A hanging request gets no response until the fault is cleared."""
    receiver.set_fault(Fault(hang=True))
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            post(receiver.endpoint + "/v1/traces", b"")
        except (OSError, http.client.HTTPException) as error:
            outcome.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(0.5)
    assert sender.is_alive()
    receiver.set_fault(None)
    sender.join(5)

    assert not sender.is_alive()
    assert len(outcome) == 1
    assert post(receiver.endpoint + "/v1/traces", b"")[0] == 200


def test_restart_keeps_port() -> None:
    """A stopped receiver starts again on the port it had."""
    with OtlpReceiver() as receiver:
        first = receiver.endpoint
        receiver.stop()
        receiver.start()

        assert receiver.endpoint == first
        assert post(first + "/v1/traces", b"")[0] == 200
