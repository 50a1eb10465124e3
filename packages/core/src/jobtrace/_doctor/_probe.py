"""One probe of an OTLP endpoint, and the finding that describes its result.

For OTLP/HTTP a probe posts an empty export request, which is valid OTLP
with no data, with the configured headers, so that a wrong API key shows
too. For OTLP/gRPC it only opens a TCP connection.
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping

from jobtrace._doctor._finding import Finding
from jobtrace._doctor._masking import mask_url

#: The path that OTLP/HTTP appends to a base endpoint, per signal.
PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}
_PORTS = "OTLP/HTTP listens on port 4318 by default, OTLP/gRPC on 4317"


@dataclasses.dataclass(frozen=True)
class Target:
    """One signal's export destination, as the OTLP exporter resolves it."""

    signal: str
    protocol: str
    url: str
    variable: str  # the variable that set the URL, for the fix text
    headers: Mapping[str, str]
    certificate: str | None = None

    @property
    def shown(self) -> str:
        """The URL with its secrets masked."""
        return mask_url(self.url)


def probe(target: Target, timeout: float) -> Finding:
    """Send one probe to ``target`` and describe the result."""
    url = target.url
    if target.protocol == "grpc" and "://" not in url:
        # The gRPC exporter also takes a bare host:port.
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        # An unclosed IPv6 bracket or a port that is not a number.
        port = None
        parts = urllib.parse.SplitResult("", "", "", "", "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Finding(
            "endpoint",
            "problem",
            f"Invalid {target.signal} endpoint {target.variable}={target.shown!r}",
            fix=f"set {target.variable} to a URL such as http://collector:4318",
        )
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    if target.protocol == "grpc":
        return _connect(target, host, port, timeout)
    return _post(target, parts, host, port, timeout)


def _connect(target: Target, host: str, port: int, timeout: float) -> Finding:
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        return _failed(target, host, port, error, timeout)
    took = (time.monotonic() - started) * 1000
    return Finding(
        "endpoint",
        "ok",
        f"{target.signal}: TCP connection to the OTLP/gRPC endpoint "
        f"{target.shown} succeeded in {took:.0f} ms; the gRPC service itself "
        "is not checked",
    )


def _post(
    target: Target,
    parts: urllib.parse.SplitResult,
    host: str,
    port: int,
    timeout: float,
) -> Finding:
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        try:
            context = ssl.create_default_context(cafile=target.certificate)
        except (OSError, ssl.SSLError) as error:
            return Finding(
                "endpoint",
                "problem",
                f"The CA file {target.certificate!r} of the {target.signal} "
                f"endpoint cannot be loaded: {error}",
                fix="set OTEL_EXPORTER_OTLP_CERTIFICATE to a readable PEM file",
            )
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {**target.headers, "Content-Type": "application/x-protobuf"}

    started = time.monotonic()
    try:
        connection.request("POST", path, body=b"", headers=headers)
        response = connection.getresponse()
        response.read(4096)
    except (OSError, http.client.HTTPException) as error:
        return _failed(target, host, port, error, timeout)
    finally:
        connection.close()
    took = (time.monotonic() - started) * 1000
    return _answered(target, response.status, response.reason, took, response)


def _answered(
    target: Target,
    status: int,
    reason: str,
    took: float,
    response: http.client.HTTPResponse,
) -> Finding:
    summary = (
        f"{target.signal}: POST {target.shown} returned {status} {reason}".rstrip()
    )
    if 200 <= status < 300:
        return Finding("endpoint", "ok", f"{summary} in {took:.0f} ms")
    if 300 <= status < 400:
        location = mask_url(response.getheader("Location") or "(no Location)")
        fix = f"set {target.variable} to the URL it redirects to: {location}"
    elif status == 405 and target.signal == "metrics":
        fix = (
            "the receiver takes no metrics at this URL (Arize Phoenix, for "
            "example, accepts only traces): set OTEL_METRICS_EXPORTER=none, "
            "or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT to a receiver of metrics"
        )
    elif status == 404:
        fix = _path_fix(target)
    elif status in (401, 403):
        fix = (
            "the receiver rejected the credentials: check the API key in "
            f"OTEL_EXPORTER_OTLP_HEADERS or OTEL_EXPORTER_OTLP_"
            f"{target.signal.upper()}_HEADERS"
        )
    elif status in (400, 405, 415):
        fix = (
            f"check that {target.variable} names an OTLP/HTTP receiver that "
            "accepts protobuf; an empty OTLP export request is valid"
        )
    else:
        fix = "the receiver is up but failing; check its logs and capacity"
    return Finding("endpoint", "problem", summary, fix=fix)


def _path_fix(target: Target) -> str:
    path = PATHS[target.signal]
    if target.variable != "OTEL_EXPORTER_OTLP_ENDPOINT":
        return f"{target.variable} is used as is, so it must end in {path}"
    return (
        "set OTEL_EXPORTER_OTLP_ENDPOINT to the receiver's base URL, without "
        f"{path}: the exporter appends the path"
    )


def _failed(
    target: Target, host: str, port: int, error: BaseException, timeout: float
) -> Finding:
    if isinstance(error, TimeoutError):
        return timed_out(target, timeout)
    where = f"{target.signal}: the OTLP endpoint {target.shown}"
    if isinstance(error, ConnectionRefusedError):
        return Finding(
            "endpoint",
            "problem",
            f"{where} refused the connection: nothing listens on {host}:{port}",
            fix=f"start the collector, or set {target.variable} to its address "
            f"({_PORTS})",
        )
    if isinstance(error, socket.gaierror):
        return Finding(
            "endpoint",
            "problem",
            f"{where} is not reachable: host {host!r} not found ({error})",
            fix=f"check the host name in {target.variable}",
        )
    if isinstance(error, ssl.SSLError):
        return Finding(
            "endpoint",
            "problem",
            f"{where} failed the TLS handshake: {error}",
            fix="set OTEL_EXPORTER_OTLP_CERTIFICATE to the CA file that signed "
            "the receiver's certificate, or use http:// for a receiver "
            "without TLS",
        )
    return Finding(
        "endpoint",
        "problem",
        f"{where} failed: {type(error).__name__}: {error}",
        fix=f"check that {target.variable} names a running OTLP receiver ({_PORTS})",
    )


def timed_out(target: Target, timeout: float) -> Finding:
    return Finding(
        "endpoint",
        "problem",
        f"{target.signal}: the OTLP endpoint {target.shown} sent no response "
        f"within {timeout:g} s",
        fix=f"check that {target.variable} names an OTLP receiver of the "
        f"{target.protocol} protocol ({_PORTS}), and that no firewall or proxy "
        "holds the connection",
    )
