"""A loopback HTTP server that accepts OTLP exports and Sentry envelopes.

The benchmark points every exporter at this server, so the cost of sending
telemetry is real but nothing leaves the machine. The server only counts
what it receives: OTLP spans, to check that a setup exported a span per
job, and Sentry transactions, for the same check on sentry-sdk. Consumer
and producer spans are also counted on their own, because some
instrumentations record more than one span per job or enqueue.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import zlib
from collections import Counter
from email.message import Message

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

HOST = "127.0.0.1"
SPANS = "spans"
#: Spans of kind CONSUMER: a job's run in the messaging conventions.
CONSUMER_SPANS = "consumer spans"
#: Spans of kind PRODUCER: an enqueue in the messaging conventions.
PRODUCER_SPANS = "producer spans"
TRANSACTIONS = "transactions"
#: Requests whose body the sink could not decode or whose path it does not know.
UNREADABLE = "unreadable"
TRACES_PATH = "/v1/traces"
# Sentry's envelope endpoint is /api/<project id>/envelope/.
ENVELOPE_SUFFIX = "/envelope/"
MAX_BODY_BYTES = 64 * 1024 * 1024


class TelemetrySink:
    """An HTTP server on 127.0.0.1 that counts received spans and transactions.

    It responds to every POST with status 200, so no exporter retries. Use it
    as a context manager; :attr:`otlp_endpoint` and :meth:`sentry_dsn` give
    the addresses to configure.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._changed = threading.Condition()
        self._server = _Server((HOST, 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="telemetry-sink", daemon=True
        )

    def __enter__(self) -> TelemetrySink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def otlp_endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{HOST}:{self._server.server_port}"

    def sentry_dsn(self) -> str:
        """Return a Sentry DSN that sends envelopes to this server."""
        return f"http://public@{HOST}:{self._server.server_port}/1"

    def reset(self) -> None:
        """Set every count back to zero."""
        with self._changed:
            self._counts.clear()

    def count(self, kind: str) -> int:
        """Return the number of items of ``kind``, such as ``SPANS``."""
        with self._changed:
            return self._counts[kind]

    def wait_for(self, kind: str, expected: int, timeout: float) -> int:
        """Wait until ``expected`` items of ``kind`` arrived; return the count.

        Returns early with the lower count when ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._counts[kind] < expected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._counts[kind]

    def add(self, kind: str, number: int) -> None:
        """Count ``number`` received items of ``kind``."""
        self.add_all(Counter({kind: number}))

    def add_all(self, counts: Counter[str]) -> None:
        """Count the received items of every kind in ``counts``."""
        with self._changed:
            self._counts.update(counts)
            self._changed.notify_all()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sink: TelemetrySink) -> None:
        super().__init__(address, _Handler)
        self.sink = sink

    def handle_error(self, request: object, client_address: object) -> None:
        # A worker killed in mid-export breaks its connection; count it
        # instead of printing a traceback into the results.
        self.sink.add(UNREADABLE, 1)


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the exporters' connections open, as a collector does.
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            # The unread body would be taken for the next request.
            self.close_connection = True
            self._respond(413)
            return
        body = self.rfile.read(length)
        self.server.sink.add_all(_count_items(self.path, self.headers, body))
        self._respond(200)

    def _respond(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the benchmark's output to its table."""


def _count_items(path: str, headers: Message, body: bytes) -> Counter[str]:
    decoded = _decompress(headers.get("Content-Encoding"), body)
    path = path.split("?", 1)[0]
    try:
        if decoded is not None and path == TRACES_PATH:
            return _count_spans(decoded)
        if decoded is not None and path.endswith(ENVELOPE_SUFFIX):
            return Counter({TRANSACTIONS: _count_transactions(decoded)})
    except (DecodeError, ValueError):
        pass
    return Counter({UNREADABLE: 1})


def _decompress(encoding: str | None, body: bytes) -> bytes | None:
    encoding = (encoding or "identity").strip().lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError):
        return None
    # Brotli and other encodings are not decoded, so their items go uncounted.
    return body if encoding == "identity" else None


def _count_spans(body: bytes) -> Counter[str]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    counts: Counter[str] = Counter({SPANS: 0})
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            counts[SPANS] += len(scope.spans)
            for span in scope.spans:
                if span.kind == Span.SPAN_KIND_CONSUMER:
                    counts[CONSUMER_SPANS] += 1
                elif span.kind == Span.SPAN_KIND_PRODUCER:
                    counts[PRODUCER_SPANS] += 1
    return counts


def _count_transactions(body: bytes) -> int:
    # An envelope is a header line, then items: a header line each, followed
    # by a payload of the header's "length" bytes or, without it, one line.
    lines = body.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    count = 0
    for _ in range(1000):
        if not rest.strip():
            break
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if header.get("type") == "transaction":
            count += 1
        if "length" in header:
            rest = rest[int(header["length"]) :].removeprefix(b"\n")
        else:
            rest = rest.partition(b"\n")[2]
    return count
