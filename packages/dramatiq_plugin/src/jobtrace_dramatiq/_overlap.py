"""Detection of other tracers that instrument Dramatiq in the same process.

jobtrace keeps its trace context in ``message.options["jobtrace"]``, and
sentry-sdk's Dramatiq integration keeps its own under another option, so
neither overwrites the other. Every message still gets two traces, so jobtrace
logs one WARNING per other tracer with the setting that keeps one.
"""

from __future__ import annotations

import logging

import jobtrace

log = logging.getLogger(__name__)


def _sentry_active() -> bool:
    found = jobtrace.sentry_integration(
        "sentry_sdk.integrations.dramatiq", "DramatiqIntegration"
    )
    if found is None:
        return False
    from sentry_sdk.tracing_utils import has_tracing_enabled

    return bool(has_tracing_enabled(found[0].options))


_TRACERS = jobtrace.OtherTracers(
    "Dramatiq",
    "message",
    {"sentry-sdk": _sentry_active},
    {
        "sentry-sdk": (
            "leave traces_sample_rate and traces_sampler unset in "
            "sentry_sdk.init to keep Sentry's error reports without its "
            "traces, or pass disabled_integrations=[DramatiqIntegration()]"
        ),
    },
    log,
)


def check() -> None:
    """Look for other active tracers, and warn once about each one."""
    _TRACERS.check()


def reset() -> None:
    """Forget the tracers found."""
    _TRACERS.reset()
