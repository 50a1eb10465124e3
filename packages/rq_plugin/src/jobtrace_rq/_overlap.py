"""Detection of other tracers that instrument RQ in the same process.

jobtrace keeps its trace context in ``job.meta["jobtrace"]``, and
sentry-sdk's RQ integration and ddtrace keep theirs under other meta keys,
so none overwrites another. Every job still gets two traces, so jobtrace
logs one WARNING per other tracer with the setting that keeps one.
"""

from __future__ import annotations

import logging
import sys

import jobtrace

log = logging.getLogger(__name__)


def _sentry_active() -> bool:
    found = jobtrace.sentry_integration("sentry_sdk.integrations.rq", "RqIntegration")
    if found is None:
        return False
    from sentry_sdk.tracing_utils import has_tracing_enabled

    return bool(has_tracing_enabled(found[0].options))


def _ddtrace_active() -> bool:
    # ddtrace 4.16's patch() sets this attribute on the rq module.
    rq = sys.modules.get("rq")
    return "ddtrace" in sys.modules and bool(getattr(rq, "_datadog_patch", False))


_TRACERS = jobtrace.OtherTracers(
    "RQ",
    "job",
    {"sentry-sdk": _sentry_active, "ddtrace": _ddtrace_active},
    {
        "sentry-sdk": (
            "leave traces_sample_rate and traces_sampler unset in "
            "sentry_sdk.init to keep Sentry's error reports without its "
            "traces, or pass disabled_integrations=[RqIntegration()]"
        ),
        "ddtrace": "set DD_TRACE_RQ_ENABLED=false",
    },
    log,
)


def check() -> None:
    """Look for other active tracers, and warn once about each one."""
    _TRACERS.check()


def reset() -> None:
    """Forget the tracers found."""
    _TRACERS.reset()
