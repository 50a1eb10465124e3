"""Detection of other tracers that instrument Celery in the same process.

opentelemetry-instrumentation-celery writes ``traceparent`` into every
message as jobtrace does, so each would overwrite the other's context.
sentry-sdk's Celery integration and ddtrace write headers of their own.
When one of them is active, jobtrace moves its context to its own header
names (:func:`jobtrace.private_headers`) and logs one WARNING per tracer
with the setting that keeps a single one.
"""

from __future__ import annotations

import logging
import sys

import jobtrace

log = logging.getLogger(__name__)

_ADVICE = {
    "opentelemetry-instrumentation-celery": (
        "call CeleryInstrumentor().uninstrument(), or set "
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=celery for opentelemetry-instrument"
    ),
    "sentry-sdk": (
        "pass CeleryIntegration(propagate_traces=False) to sentry_sdk.init to "
        "keep Sentry's errors without its Celery traces"
    ),
    "ddtrace": "set DD_TRACE_CELERY_ENABLED=false",
}
_warned: set[str] = set()


def _opentelemetry_active() -> bool:
    module = sys.modules.get("opentelemetry.instrumentation.celery")
    instrumentor = getattr(module, "CeleryInstrumentor", None)
    return bool(instrumentor and instrumentor().is_instrumented_by_opentelemetry)


def _sentry_active() -> bool:
    if "sentry_sdk.integrations.celery" not in sys.modules:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    # sentry-sdk 1.x has no get_client().
    get_client = getattr(sentry_sdk, "get_client", None)
    if get_client is None:
        return False
    integration = get_client().get_integration(CeleryIntegration)
    return bool(integration is not None and integration.propagate_traces)


def _ddtrace_active() -> bool:
    # ddtrace 4.16's patch_app() sets this attribute on the Celery class.
    celery = sys.modules.get("celery")
    app_class = getattr(celery, "Celery", None)
    return "ddtrace" in sys.modules and bool(
        getattr(app_class, "__datadog_patch", False)
    )


_CHECKS = {
    "opentelemetry-instrumentation-celery": _opentelemetry_active,
    "sentry-sdk": _sentry_active,
    "ddtrace": _ddtrace_active,
}


def check() -> None:
    """Look for other active tracers; switch headers and warn once each."""
    for name, active in _CHECKS.items():
        if name in _warned or not active():
            continue
        _warned.add(name)
        jobtrace.private_headers()
        log.warning(
            "%s also traces Celery in this process, so every job gets two "
            "traces. jobtrace now keeps its trace context in jobtrace_* "
            "headers so that neither overwrites the other's. To trace jobs "
            "once, %s",
            name,
            _ADVICE[name],
        )


def reset() -> None:
    """Forget the tracers found, and use the standard headers again."""
    _warned.clear()
    jobtrace.private_headers(False)
