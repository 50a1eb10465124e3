"""Detection of other tracers that instrument RQ in the same process.

jobtrace keeps its trace context in ``job.meta["jobtrace"]``, and
sentry-sdk's RQ integration and ddtrace keep theirs under other meta keys,
so none overwrites another. Every job still gets two traces, so jobtrace
logs one WARNING per other tracer with the setting that keeps one.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

_ADVICE = {
    "sentry-sdk": (
        "leave traces_sample_rate and traces_sampler unset in sentry_sdk.init "
        "to keep Sentry's error reports without its traces, or pass "
        "disabled_integrations=[RqIntegration()]"
    ),
    "ddtrace": "set DD_TRACE_RQ_ENABLED=false",
}
_warned: set[str] = set()


def _sentry_active() -> bool:
    # Until this module is imported, sentry-sdk has not set up its RQ
    # integration.
    if "sentry_sdk.integrations.rq" not in sys.modules:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.rq import RqIntegration
    from sentry_sdk.tracing_utils import has_tracing_enabled

    # sentry-sdk 1.x has no get_client().
    get_client = getattr(sentry_sdk, "get_client", None)
    if get_client is None:
        return False
    client = get_client()
    integration = client.get_integration(RqIntegration)
    return integration is not None and has_tracing_enabled(client.options)


def _ddtrace_active() -> bool:
    # ddtrace 4.16's patch() sets this attribute on the rq module.
    rq = sys.modules.get("rq")
    return "ddtrace" in sys.modules and bool(getattr(rq, "_datadog_patch", False))


_CHECKS = {"sentry-sdk": _sentry_active, "ddtrace": _ddtrace_active}


def check() -> None:
    """Look for other active tracers, and warn once about each one."""
    for name, active in _CHECKS.items():
        if name in _warned or not active():
            continue
        _warned.add(name)
        log.warning(
            "%s also traces RQ in this process, so every job gets two traces. "
            "To trace jobs once, %s",
            name,
            _ADVICE[name],
        )


def reset() -> None:
    """Forget the tracers found."""
    _warned.clear()
