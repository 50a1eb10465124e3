"""``OTEL_*`` values that the OpenTelemetry SDK rejects or ignores.

Each check reads the value as the installed SDK reads it. A value that
makes the SDK raise when jobtrace builds its provider, or that breaks
jobtrace's flush limit, is a problem. A value that the SDK replaces with
its default, after a log line, is a warning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from importlib.metadata import entry_points

from jobtrace._doctor._finding import Finding

_SECTION = "settings"
_PROPAGATOR_GROUP = "opentelemetry_propagator"
#: The batch span processor's variables and their defaults.
_BSP = {
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,
}
#: The compressions that the OTLP exporters accept.
_COMPRESSIONS = ("none", "gzip", "deflate")
#: The samplers that OTEL_TRACES_SAMPLER may name.
_SAMPLERS = (
    "always_on",
    "always_off",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "parentbased_traceidratio",
)
_METRIC_VARIABLES = ("OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT")


def check(environ: Mapping[str, str]) -> list[Finding]:
    """Return a finding for each ``OTEL_*`` value that the SDK cannot use."""
    return [
        *_propagators(environ),
        *_batch(environ),
        *_timeouts(environ),
        *_compression(environ),
        *_sampler(environ),
        *_metric_intervals(environ),
        *_certificates(environ),
    ]


def _propagators(environ: Mapping[str, str]) -> list[Finding]:
    # opentelemetry.propagate raises ValueError at import for a name that
    # no installed propagator registers, so every host's instrumentation
    # fails to import.
    raw = environ.get("OTEL_PROPAGATORS")
    if raw is None:
        return []
    known = sorted({point.name for point in entry_points(group=_PROPAGATOR_GROUP)})
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name != "none" and name not in known]
    if not unknown:
        return []
    return [
        Finding(
            _SECTION,
            "problem",
            f"OTEL_PROPAGATORS names {', '.join(map(repr, unknown))}, which no "
            "installed propagator provides, so importing OpenTelemetry's "
            "propagation, and with it every jobtrace plugin, raises ValueError",
            fix=f"set OTEL_PROPAGATORS to a list of {', '.join([*known, 'none'])}, "
            "or install the propagator's package",
        )
    ]


def _batch(environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    values = {}
    for name, default in _BSP.items():
        raw = environ.get(name)
        if raw is None:
            values[name] = default
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            values[name] = default
            findings.append(
                Finding(
                    _SECTION,
                    "warning",
                    f"{name}={raw!r} is not an integer, so the SDK logs an error "
                    f"and uses {default}",
                    fix=f"set {name} to a whole number, or unset it",
                )
            )
    # The batch span processor raises ValueError for these when jobtrace
    # builds the provider, so the worker exports nothing.
    for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_SCHEDULE_DELAY"):
        if values[name] <= 0:
            findings.append(_batch_problem(f"{name}={values[name]} is not positive"))
    size = values["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"]
    queue = values["OTEL_BSP_MAX_QUEUE_SIZE"]
    if size <= 0:
        findings.append(
            _batch_problem(f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={size} is not positive")
        )
    elif queue > 0 and size > queue:
        findings.append(
            _batch_problem(
                f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={size} is larger than "
                f"OTEL_BSP_MAX_QUEUE_SIZE={queue}"
            )
        )
    return findings


def _batch_problem(what: str) -> Finding:
    return Finding(
        _SECTION,
        "problem",
        f"{what}, so the SDK's batch span processor raises ValueError when "
        "jobtrace builds its tracer provider, and no span is exported",
        fix="set OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY and "
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE to positive integers, the batch size "
        "at most the queue size, or unset them",
    )


def _timeouts(environ: Mapping[str, str]) -> list[Finding]:
    # The OTLP exporters fall back to 10 s for a value that is not a
    # number. jobtrace caps each export at JOBTRACE_FLUSH_TIMEOUT only
    # when no timeout variable is set, so the export can then outlast it.
    findings = []
    for signal in ("", "TRACES_", "METRICS_"):
        name = f"OTEL_EXPORTER_OTLP_{signal}TIMEOUT"
        raw = environ.get(name)
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            continue
        findings.append(
            Finding(
                _SECTION,
                "problem",
                f"{name}={raw!r} is not a positive number of seconds, so the "
                "OTLP exporter waits up to 10 s per export, longer than "
                "JOBTRACE_FLUSH_TIMEOUT",
                fix=f"set {name} to a number of seconds such as 5, or unset it",
            )
        )
    return findings


def _compression(environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    for signal in ("", "TRACES_", "METRICS_"):
        name = f"OTEL_EXPORTER_OTLP_{signal}COMPRESSION"
        raw = environ.get(name)
        if raw and raw.strip().lower() not in _COMPRESSIONS:
            findings.append(
                Finding(
                    _SECTION,
                    "warning",
                    f"{name}={raw!r} is not a compression the OTLP exporter "
                    "supports, so it logs a warning and sends uncompressed",
                    fix=f"set {name} to {', '.join(_COMPRESSIONS)}, or unset it",
                )
            )
    return findings


def _sampler(environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    raw = environ.get("OTEL_TRACES_SAMPLER")
    sampler = (raw or "parentbased_always_on").strip().lower()
    if sampler not in _SAMPLERS:
        findings.append(
            Finding(
                _SECTION,
                "warning",
                f"OTEL_TRACES_SAMPLER={raw!r} is not a sampler the SDK knows, so "
                "it logs a warning and samples with parentbased_always_on",
                fix=f"set OTEL_TRACES_SAMPLER to one of {', '.join(_SAMPLERS)}",
            )
        )
    elif sampler.endswith("traceidratio"):
        argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "")
        try:
            ratio = float(argument)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            findings.append(
                Finding(
                    _SECTION,
                    "warning",
                    f"OTEL_TRACES_SAMPLER_ARG={argument!r} is not a ratio from 0 "
                    "to 1, so the SDK keeps every trace",
                    fix="set OTEL_TRACES_SAMPLER_ARG to a ratio such as 0.25",
                )
            )
    return findings


def _metric_intervals(environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    for name in _METRIC_VARIABLES:
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            float(raw)
        except ValueError:
            findings.append(
                Finding(
                    _SECTION,
                    "warning",
                    f"{name}={raw!r} is not a number of milliseconds, so the SDK "
                    "logs a warning and uses its default",
                    fix=f"set {name} to a number of milliseconds, or unset it",
                )
            )
    return findings


def _certificates(environ: Mapping[str, str]) -> list[Finding]:
    # The exporter passes the file to requests, which raises on every export
    # to an https endpoint when the file is missing, which the endpoint
    # probe reports. An http endpoint never reads the file.
    findings = []
    for signal in ("", "TRACES_", "METRICS_"):
        name = f"OTEL_EXPORTER_OTLP_{signal}CERTIFICATE"
        path = environ.get(name)
        if path and not os.path.isfile(path):
            findings.append(
                Finding(
                    _SECTION,
                    "warning",
                    f"{name} names {path!r}, which is missing, so exports to an "
                    "https endpoint would fail",
                    fix=f"set {name} to the CA bundle's path, or unset it",
                )
            )
    return findings
