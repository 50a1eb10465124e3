"""Other tracers that instrument the same hosts as jobtrace.

Two tracers on one host each make a trace per job. For Celery, jobtrace
looks for opentelemetry-instrumentation-celery, sentry-sdk's Celery
integration and ddtrace at ``instrument()``, at worker start and at the
first job, and moves its trace context to ``jobtrace_*`` headers when it
finds one. The RQ and Dramatiq plugins keep their context under their own
key (``job.meta["jobtrace"]``, ``message.options["jobtrace"]``), look for
Sentry's integration (and ddtrace, for RQ) at the first enqueue and at
worker start, and log one WARNING per tracer found.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from jobtrace._doctor._finding import Finding
from jobtrace._doctor._hosts import ENTRY_POINT_GROUP
from jobtrace._hosts import host_version

_TITLES = {"celery": "Celery", "rq": "RQ", "dramatiq": "Dramatiq"}
#: Sentry's integration module and class for each host. sentry-sdk (2.76)
#: turns the Celery and RQ integrations on by itself when the host is
#: installed; the Dramatiq one only when passed to ``sentry_sdk.init``.
_SENTRY = {
    "celery": ("sentry_sdk.integrations.celery", "CeleryIntegration"),
    "rq": ("sentry_sdk.integrations.rq", "RqIntegration"),
    "dramatiq": ("sentry_sdk.integrations.dramatiq", "DramatiqIntegration"),
}
_SENTRY_ADVICE = {
    "celery": "pass CeleryIntegration(propagate_traces=False) to "
    "sentry_sdk.init to keep Sentry's errors without its Celery traces",
    "rq": "leave RqIntegration out with disabled_integrations=[RqIntegration()] "
    "in sentry_sdk.init",
    "dramatiq": "leave DramatiqIntegration out of sentry_sdk.init",
}
_HANDLING = {
    "celery": "jobtrace looks for other tracers at instrument(), at worker "
    "start and at the first job. Once it finds one, it writes its trace "
    "context under jobtrace_* headers, so that neither overwrites the "
    "other's, and logs one WARNING per tracer",
    "rq": 'jobtrace keeps its trace context in job.meta["jobtrace"], apart '
    "from the other tracer's. It looks for Sentry's integration and ddtrace "
    "at the first enqueue and at worker start, and logs one WARNING for each",
    "dramatiq": 'jobtrace keeps its trace context in message.options["jobtrace"], '
    "apart from the other tracer's. It looks for Sentry's integration at the "
    "first enqueue and at worker start, and logs one WARNING if it is active",
}


def find(hosts: set[str], environ: Mapping[str, str]) -> list[Finding]:
    """Report other tracers, installed or active, for each host in ``hosts``."""
    findings = []
    for host in sorted(hosts):
        findings.extend(_contrib(host, environ))
        findings.extend(_sentry(host))
        findings.extend(_ddtrace(host))
    if "celery" in hosts and _private_headers_on():
        findings.append(
            Finding(
                "tracers",
                "note",
                "jobtrace writes its trace context under jobtrace_* headers in "
                "this process, because it found another Celery tracer",
            )
        )
    return findings


def _contrib(host: str, environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    disabled = {
        name.strip()
        for name in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
    }
    for point in entry_points(group=ENTRY_POINT_GROUP):
        module = point.value.partition(":")[0]
        if point.name != host or module.startswith("jobtrace"):
            continue
        distribution = point.dist.name if point.dist else module
        if _instrumented(point.value):
            findings.append(_active(host, distribution, _contrib_advice(host)))
        elif host not in disabled:
            findings.append(
                Finding(
                    "tracers",
                    "warning",
                    f"{distribution} is installed, so opentelemetry-instrument "
                    f"loads it beside jobtrace and each {_TITLES[host]} job gets "
                    "two traces",
                    fix=f"set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={host} for "
                    f"opentelemetry-instrument, or uninstall {distribution}",
                )
            )
    return findings


def _contrib_advice(host: str) -> str:
    return (
        f"call its instrumentor's uninstrument(), or set "
        f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={host} for opentelemetry-instrument"
    )


def _instrumented(value: str) -> bool:
    # Only a module that is already imported can have instrumented anything,
    # and importing one here would change the process under inspection.
    module_name, _, attribute = value.partition(":")
    module = sys.modules.get(module_name)
    instrumentor: Any = getattr(module, attribute, None)
    return bool(instrumentor and instrumentor().is_instrumented_by_opentelemetry)


def _sentry(host: str) -> list[Finding]:
    version = host_version("sentry-sdk")
    if version is None:
        return []
    module_name, class_name = _SENTRY[host]
    module = sys.modules.get(module_name)
    integration = None
    if module is not None and "sentry_sdk" in sys.modules:
        sentry_sdk: Any = sys.modules["sentry_sdk"]
        try:
            integration = sentry_sdk.get_client().get_integration(
                getattr(module, class_name)
            )
        except AttributeError:
            # sentry-sdk 1.x has no get_client().
            return [
                Finding(
                    "tracers",
                    "note",
                    f"sentry-sdk {version} is loaded; whether its {class_name} "
                    "is active is not checked for this version",
                )
            ]
    if integration is None:
        return [
            Finding(
                "tracers",
                "note",
                f"sentry-sdk {version} is installed; its {class_name} is not "
                "active in this process",
            )
        ]
    if host == "celery" and not integration.propagate_traces:
        return [
            Finding(
                "tracers",
                "note",
                "sentry-sdk's CeleryIntegration is active with "
                "propagate_traces=False, so it writes no trace headers and "
                "jobtrace keeps the standard ones",
            )
        ]
    return [_active(host, f"sentry-sdk {version} ({class_name})", _SENTRY_ADVICE[host])]


def _ddtrace(host: str) -> list[Finding]:
    version = host_version("ddtrace")
    if version is None:
        return []
    if "ddtrace" not in sys.modules:
        return [
            Finding(
                "tracers",
                "note",
                f"ddtrace {version} is installed, but not loaded in this process",
            )
        ]
    if host != "celery":
        return [
            Finding(
                "tracers",
                "note",
                f"ddtrace {version} is loaded; whether it patches "
                f"{_TITLES[host]} is not checked",
            )
        ]
    # ddtrace 4.16's patch_app() sets this attribute on the Celery class.
    app_class = getattr(sys.modules.get("celery"), "Celery", None)
    if not getattr(app_class, "__datadog_patch", False):
        return []
    return [_active(host, f"ddtrace {version}", "set DD_TRACE_CELERY_ENABLED=false")]


def _active(host: str, tracer: str, advice: str) -> Finding:
    return Finding(
        "tracers",
        "warning",
        f"{tracer} also traces {_TITLES[host]} in this process, so each job gets "
        f"two traces. {_HANDLING[host]}",
        fix=f"to trace jobs once, {advice}",
    )


def _private_headers_on() -> bool:
    from jobtrace import _carrier

    return _carrier._private
