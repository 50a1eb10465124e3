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


def _opentelemetry_active() -> bool:
    module = sys.modules.get("opentelemetry.instrumentation.celery")
    instrumentor = getattr(module, "CeleryInstrumentor", None)
    return bool(instrumentor and instrumentor().is_instrumented_by_opentelemetry)


def _sentry_active() -> bool:
    found = jobtrace.sentry_integration(
        "sentry_sdk.integrations.celery", "CeleryIntegration"
    )
    return found is not None and bool(found[1].propagate_traces)


def _ddtrace_active() -> bool:
    # ddtrace 4.16's patch_app() sets this attribute on the Celery class.
    celery = sys.modules.get("celery")
    app_class = getattr(celery, "Celery", None)
    return "ddtrace" in sys.modules and bool(
        getattr(app_class, "__datadog_patch", False)
    )


_TRACERS = jobtrace.OtherTracers(
    "Celery",
    "job",
    {
        "opentelemetry-instrumentation-celery": _opentelemetry_active,
        "sentry-sdk": _sentry_active,
        "ddtrace": _ddtrace_active,
    },
    {
        "opentelemetry-instrumentation-celery": (
            "call CeleryInstrumentor().uninstrument(), or set "
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=celery for "
            "opentelemetry-instrument"
        ),
        "sentry-sdk": (
            "pass CeleryIntegration(propagate_traces=False) to sentry_sdk.init "
            "to keep Sentry's errors without its Celery traces"
        ),
        "ddtrace": "set DD_TRACE_CELERY_ENABLED=false",
    },
    log,
    on_found=jobtrace.private_headers,
    note=(
        "jobtrace now keeps its trace context in jobtrace_* headers so that "
        "neither overwrites the other's."
    ),
)


def check() -> None:
    """Look for other active tracers; switch headers and warn once each."""
    _TRACERS.check()


def reset() -> None:
    """Forget the tracers found, and use the standard headers again."""
    _TRACERS.reset()
    jobtrace.private_headers(False)
