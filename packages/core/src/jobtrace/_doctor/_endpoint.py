"""Whether the OTLP endpoints that jobtrace exports to respond.

The targets resolve from the ``OTEL_*`` variables as the OTLP exporters
resolve them. Every probe runs on its own thread, and the check waits for
all of them at most the given time plus a small margin.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Mapping

from jobtrace._doctor._finding import Finding
from jobtrace._doctor._masking import mask_url
from jobtrace._doctor._probe import PATHS, Target, probe, timed_out

__all__ = ["DEFAULT_TIMEOUT", "Target", "check", "probe", "resolve"]

#: Seconds that each probe waits when ``--timeout`` is unset. The whole
#: check ends at most ``_MARGIN`` seconds after that.
DEFAULT_TIMEOUT = 3.0
_MARGIN = 0.5
_DEFAULT_BASE = {
    "http/protobuf": "http://localhost:4318",
    "grpc": "http://localhost:4317",
}
_PROTOCOLS = tuple(_DEFAULT_BASE)
_BASE_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: The paths of the OTLP/HTTP signals, which a base endpoint must not
#: contain.
_SIGNAL_PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")


def resolve(environ: Mapping[str, str]) -> tuple[list[Target], list[Finding]]:
    """Return the OTLP targets of traces and metrics, and configuration findings."""
    targets, findings = [], []
    for signal in PATHS:
        exporter_variable = f"OTEL_{signal.upper()}_EXPORTER"
        exporter = environ.get(exporter_variable, "otlp").strip().lower()
        if exporter in ("none", "console"):
            findings.append(
                Finding(
                    "endpoint",
                    "note",
                    f"{exporter_variable}={exporter}, so jobtrace sends no "
                    f"{signal} over OTLP",
                )
            )
            continue
        if exporter != "otlp":
            findings.append(
                Finding(
                    "endpoint",
                    "problem",
                    f"Unsupported {exporter_variable}={exporter!r}; jobtrace "
                    "exports with otlp instead",
                    fix=f"set {exporter_variable} to otlp, console or none",
                )
            )
        protocol, finding = _protocol(environ, signal)
        if finding is not None:
            findings.append(finding)
        if protocol is None:
            continue
        targets.append(_target(environ, signal, protocol))
    finding = _signal_path_in_base(environ, targets)
    if finding is not None:
        findings.append(finding)
    return targets, findings


def _protocol(
    environ: Mapping[str, str], signal: str
) -> tuple[str | None, Finding | None]:
    own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    variable = own if environ.get(own) else "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = (environ.get(variable) or "http/protobuf").strip()
    if protocol not in _PROTOCOLS:
        return "http/protobuf", Finding(
            "endpoint",
            "problem",
            f"Unsupported OTLP protocol {variable}={protocol!r}; jobtrace "
            "exports with http/protobuf instead",
            fix=f"set {variable} to http/protobuf or grpc",
        )
    grpc_exporter = "opentelemetry.exporter.otlp.proto.grpc"
    if protocol == "grpc" and importlib.util.find_spec(grpc_exporter) is None:
        return None, Finding(
            "endpoint",
            "problem",
            f"{variable}=grpc, but the OTLP/gRPC exporter is not installed, so "
            f"jobtrace cannot export {signal}",
            fix=f'pip install "jobtrace[grpc]", or set {variable}=http/protobuf',
        )
    return protocol, None


def _target(environ: Mapping[str, str], signal: str, protocol: str) -> Target:
    # The OTLP specification: a per-signal endpoint is used as is, and the
    # common one is a base URL to which OTLP/HTTP appends the signal's path.
    own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    if environ.get(own, "").strip():
        url, variable = environ[own].strip(), own
    else:
        variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
        url = environ.get(variable, "").strip() or _DEFAULT_BASE[protocol]
        if protocol == "http/protobuf":
            url = url.rstrip("/") + PATHS[signal]
    certificate = (
        environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_CERTIFICATE")
        or environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
        or None
    )
    headers = _headers(environ, signal)
    return Target(signal, protocol, url, variable, headers, certificate)


def _signal_path_in_base(
    environ: Mapping[str, str], targets: list[Target]
) -> Finding | None:
    # OTLP/HTTP appends the signal's path to the base endpoint, so a base
    # that ends in one sends to ".../v1/traces/v1/traces". The gRPC
    # exporter keeps only the host and port, so only OTLP/HTTP is affected.
    base = environ.get(_BASE_VARIABLE, "").strip().rstrip("/")
    path = next((item for item in _SIGNAL_PATHS if base.endswith(item)), None)
    affected = [
        target
        for target in targets
        if target.variable == _BASE_VARIABLE and target.protocol == "http/protobuf"
    ]
    if path is None or not affected:
        return None

    urls = ", ".join(target.shown for target in affected)
    fix = f"remove {path} from {_BASE_VARIABLE}"
    signal = path.rsplit("/", 1)[1]
    if signal in PATHS:
        own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        fix += f", or set the full URL {mask_url(base)} in {own}, used as is"
    return Finding(
        "endpoint",
        "problem",
        f"{_BASE_VARIABLE} ends in {path}, but the OTLP/HTTP exporter appends "
        f"each signal's path to this base endpoint, so it sends to {urls}",
        fix=fix,
    )


def _headers(environ: Mapping[str, str], signal: str) -> dict[str, str]:
    from opentelemetry.util.re import parse_env_headers

    raw = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS") or environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    return dict(parse_env_headers(raw, liberal=True))


def check(environ: Mapping[str, str], timeout: float) -> list[Finding]:
    """Probe every target at once, and return what each probe found."""
    targets, findings = resolve(environ)
    results: dict[int, Finding] = {}
    threads = []
    for index, target in enumerate(targets):
        thread = threading.Thread(
            target=lambda i=index, t=target: results.__setitem__(i, probe(t, timeout)),
            name=f"jobtrace-doctor-{target.signal}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)

    deadline = time.monotonic() + timeout + _MARGIN
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for index, target in enumerate(targets):
        # A probe still running is stuck in name resolution or a read that
        # its socket timeout did not cover.
        findings.append(results.get(index) or timed_out(target, timeout))
    return findings
