"""A small OTLP/HTTP receiver that decodes exported spans into plain values.

:class:`OtlpReceiver` listens on 127.0.0.1 and accepts the protobuf encoding
of OTLP/HTTP, so a real OTLP exporter can send to it. The ``jobtrace demo``
command and the integration tests use it to see the spans that jobtrace
exported over the wire, and it can forward every accepted request to a real
collector at the same time. Tests also make it fail on purpose, with
:meth:`OtlpReceiver.set_fault`, to play a collector that is down.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import http.server
import logging
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import cast

# protobuf ships no type information, and types-protobuf is not a dependency.
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from jobtrace._otlp import (
    ReceivedPoint,
    ReceivedSpan,
    decode_attributes,
    decode_metric,
    decode_span,
)

__all__ = [
    "LOGS_PATH",
    "METRICS_PATH",
    "TRACES_PATH",
    "Fault",
    "OtlpReceiver",
    "ReceivedSpan",
]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
LOGS_PATH = "/v1/logs"
_PATHS = (TRACES_PATH, METRICS_PATH, LOGS_PATH)
_FORWARD_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.05
#: Maximum time in seconds that a request waits for a response while the
#: receiver hangs.
_MAX_HANG_S = 300.0
_PROTOBUF = "application/x-protobuf"
_EMPTY_RESPONSE: bytes = ExportTraceServiceResponse().SerializeToString()


class _RejectedRequestError(Exception):
    """An export request that the receiver rejects with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Fault:
    """The response the receiver sends to every request while a fault is set.

    With ``hang``, it reads each request and sends no response until the
    fault is cleared or the receiver stops, then closes the connection.
    Otherwise it responds with ``status``, with a ``Retry-After`` header
    when ``retry_after`` is set, and stores nothing.
    """

    status: int = 503
    retry_after: str | None = None
    hang: bool = False


class OtlpReceiver:
    """An OTLP/HTTP server on 127.0.0.1 that stores the spans it receives.

    It accepts ``POST /v1/traces`` and ``POST /v1/metrics`` with a protobuf
    body, optionally gzip or deflate compressed, and stores the decoded
    spans and metric data points. Requests to ``/v1/logs`` are accepted and
    only counted. With
    ``forward_to`` set, each accepted request is sent on unchanged to the
    same path under that endpoint before the receiver sends its response.
    After :meth:`stop`, :meth:`start` binds the same port again, so to an
    exporter the collector went away and came back.

    Note:
        The receiver reads only bodies with a ``Content-Length`` header, and
        it does not decode the JSON encoding of OTLP.
    """

    def __init__(self, port: int = 0, *, forward_to: str | None = None) -> None:
        self._port = port
        self._forward_to = forward_to.rstrip("/") if forward_to else None
        self._changed = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self._generation = 0
        self._request_counts: Counter[str] = Counter()
        self._forward_failures = 0
        self._fault: Fault | None = None
        self._faulted_requests = 0
        # Set while no request may hang: no fault, or the receiver stopped.
        self._release = threading.Event()
        self._release.set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the port and serve requests in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("OtlpReceiver is already started")
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_address[1]
        if self._fault is not None and self._fault.hang:
            self._release.clear()
        # stop() waits up to one poll interval for serve_forever to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(_POLL_INTERVAL_S,),
            name="jobtrace-otlp-receiver",
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("OTLP receiver listening on %s", self.endpoint)

    def stop(self) -> None:
        """Stop serving and close the socket. Calling it twice does nothing."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._release.set()
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None
        log.info("OTLP receiver stopped")

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The base URL, such as ``http://127.0.0.1:4318``, without a path."""
        if self._server is None:
            raise RuntimeError("OtlpReceiver is not started. Call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def forward_failures(self) -> int:
        """The number of requests that could not be forwarded."""
        with self._changed:
            return self._forward_failures

    def set_fault(self, fault: Fault | None) -> None:
        """Fail every request as ``fault`` sets, or serve normally for None.

        Requests that are hanging when the fault changes are released and
        get no response.
        """
        with self._changed:
            self._fault = fault
        if fault is not None and fault.hang:
            self._release.clear()
        else:
            self._release.set()

    @property
    def faulted_requests(self) -> int:
        """The number of requests that a fault failed or held."""
        with self._changed:
            return self._faulted_requests

    def _faulted(self) -> Fault | None:
        with self._changed:
            fault = self._fault
            if fault is not None:
                self._faulted_requests += 1
            return fault

    def _hang(self) -> None:
        self._release.wait(_MAX_HANG_S)

    def request_count(self, path: str = TRACES_PATH) -> int:
        """Return how many requests to ``path`` were accepted."""
        with self._changed:
            return self._request_counts[path]

    def spans(self) -> list[ReceivedSpan]:
        """Return a copy of the spans received so far, in arrival order."""
        with self._changed:
            return list(self._spans)

    def metric_points(self) -> list[ReceivedPoint]:
        """Return a copy of the metric data points received, in arrival order."""
        with self._changed:
            return list(self._points)

    def latest_points(self) -> dict[tuple[str, str, str], ReceivedPoint]:
        """Return the newest received point of each series, by series.

        Cumulative exports repeat every series with a growing value, so the
        newest point contains all the measurements of its series.
        """
        latest: dict[tuple[str, str, str], ReceivedPoint] = {}
        for point in self.metric_points():
            found = latest.get(point.series)
            if found is None or point.time_ns >= found.time_ns:
                latest[point.series] = point
        return latest

    def clear(self) -> None:
        """Forget the received spans, metric points and request counts."""
        with self._changed:
            self._spans.clear()
            self._points.clear()
            self._request_counts.clear()
            self._generation += 1
            self._changed.notify_all()

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 10.0,
        *,
        description: str = "the condition",
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans)`` is true and return those spans.

        The predicate runs on a copy of the received spans, once at the
        start and again each time spans arrive. ``description`` names the
        condition in the message of the :class:`TimeoutError` raised when
        ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                spans = list(self._spans)
                generation = self._generation
            if predicate(spans):
                return spans

            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(_timeout_message(description, timeout, spans))
            self._wait_for_change(generation, remaining)

    def _wait_for_change(self, generation: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._generation != generation, timeout)

    def wait_for_spans(
        self, count: int, timeout: float = 10.0, name_prefix: str | None = None
    ) -> list[ReceivedSpan]:
        """Wait for ``count`` spans whose name starts with ``name_prefix``.

        Return all the matching spans once there are at least ``count``, or
        raise :class:`TimeoutError` after ``timeout`` seconds.
        """
        prefix = name_prefix or ""
        description = f"{count} spans"
        if prefix:
            description += f" named {prefix!r}…"
        matched: list[ReceivedSpan] = []

        def enough(spans: list[ReceivedSpan]) -> bool:
            matched[:] = [span for span in spans if span.name.startswith(prefix)]
            return len(matched) >= count

        self.wait_for(enough, timeout, description=description)
        return matched

    def _accept(self, path: str, headers: _Headers, body: bytes) -> bytes:
        """Decode and store one request body, and return the response body.

        Raises :class:`_RejectedRequestError` for an unknown path or a body
        that cannot be decoded.
        """
        if path not in _PATHS:
            raise _RejectedRequestError(
                404, f"path {path} not found. Use {', '.join(_PATHS)}"
            )
        spans: list[ReceivedSpan] = []
        points: list[ReceivedPoint] = []
        if path == TRACES_PATH:
            _check_content_type(headers.content_type)
            spans = _decode_spans(_decompress(headers.content_encoding, body))
        elif path == METRICS_PATH:
            _check_content_type(headers.content_type)
            points = _decode_points(_decompress(headers.content_encoding, body))

        with self._changed:
            self._spans.extend(spans)
            self._points.extend(points)
            self._request_counts[path] += 1
            self._generation += 1
            self._changed.notify_all()
        log.debug("OTLP receiver accepted %s with %d spans", path, len(spans))

        if self._forward_to is not None:
            self._forward(self._forward_to + path, headers, body)
        return _EMPTY_RESPONSE

    def _forward(self, url: str, headers: _Headers, body: bytes) -> None:
        forwarded = {"Content-Type": headers.content_type or _PROTOBUF}
        if headers.content_encoding:
            forwarded["Content-Encoding"] = headers.content_encoding
        request = urllib.request.Request(url, body, forwarded, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=_FORWARD_TIMEOUT_S):
                pass
        except (OSError, ValueError, http.client.HTTPException) as error:
            with self._changed:
                self._forward_failures += 1
                first = self._forward_failures == 1
            if first:
                log.warning(
                    "OTLP receiver failed to forward to %s: %s. Later failures "
                    "are only counted in forward_failures",
                    url,
                    error,
                )


@dataclasses.dataclass(frozen=True)
class _Headers:
    """The request headers that decoding and forwarding depend on."""

    content_type: str | None
    content_encoding: str | None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: OtlpReceiver) -> None:
        super().__init__(address, _Handler)
        self.receiver = receiver

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver calls this for an Exception in a handler thread and keeps
        # serving. The default prints the traceback to stderr.
        log.error(
            "OTLP receiver failed on a request from %s",
            client_address,
            exc_info=sys.exc_info(),
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver = cast(_Server, self.server).receiver
        headers = _Headers(
            self.headers.get("Content-Type"), self.headers.get("Content-Encoding")
        )
        try:
            body = self._read_body()
            fault = receiver._faulted()
            if fault is not None:
                self._answer_fault(receiver, fault)
                return
            payload = receiver._accept(self.path, headers, body)
        except _RejectedRequestError as error:
            log.debug("OTLP receiver rejected %s: %s", self.path, error)
            self._respond(error.status, str(error).encode(), "text/plain")
            return
        self._respond(200, payload, _PROTOBUF)

    def _answer_fault(self, receiver: OtlpReceiver, fault: Fault) -> None:
        if fault.hang:
            receiver._hang()
            self.close_connection = True
            return
        message = f"fault injected: status {fault.status}".encode()
        self.send_response(fault.status)
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        self.wfile.write(message)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise _RejectedRequestError(411, "missing Content-Length header")
        if not length.isdigit():
            raise _RejectedRequestError(400, f"invalid Content-Length {length!r}")
        return self.rfile.read(int(length))

    def _respond(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        # The default writes every request to stderr.
        log.debug("OTLP receiver: %s", format % args)


def _check_content_type(content_type: str | None) -> None:
    media_type = (content_type or _PROTOBUF).split(";")[0].strip().lower()
    if media_type != _PROTOBUF:
        raise _RejectedRequestError(
            415, f"unsupported Content-Type {media_type}. Send {_PROTOBUF}"
        )


def _decompress(content_encoding: str | None, body: bytes) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as error:
        raise _RejectedRequestError(400, f"invalid {encoding} body: {error}") from None
    if encoding != "identity":
        raise _RejectedRequestError(
            415, f"unsupported Content-Encoding {encoding}. Use gzip or deflate"
        )
    return body


def _decode_spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise _RejectedRequestError(400, f"invalid protobuf body: {error}") from None

    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            spans.extend(decode_span(span, resource) for span in scope_spans.spans)
    return spans


def _decode_points(body: bytes) -> list[ReceivedPoint]:
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise _RejectedRequestError(400, f"invalid protobuf body: {error}") from None

    points: list[ReceivedPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = decode_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points.extend(decode_metric(metric, resource))
    return points


def _timeout_message(
    description: str, timeout: float, spans: list[ReceivedSpan]
) -> str:
    names = [span.name for span in spans[:10]]
    if len(spans) > len(names):
        names.append(f"and {len(spans) - len(names)} more")
    listed = f": {', '.join(names)}" if names else ""
    return (
        f"timed out after {timeout} s waiting for {description}; the receiver "
        f"has {len(spans)} spans{listed}"
    )
