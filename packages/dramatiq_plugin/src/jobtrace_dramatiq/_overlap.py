"""Detection of other tracers that instrument Dramatiq in the same process.

jobtrace keeps its trace context in ``message.options["jobtrace"]``, and
sentry-sdk's Dramatiq integration keeps its own under another option, so
neither overwrites the other. Every message still gets two traces, so jobtrace
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
        "disabled_integrations=[DramatiqIntegration()]"
    ),
}
_warned: set[str] = set()


def _sentry_active() -> bool:
    # Until this module is imported, sentry-sdk has not set up its Dramatiq
    # integration.
    if "sentry_sdk.integrations.dramatiq" not in sys.modules:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration
    from sentry_sdk.tracing_utils import has_tracing_enabled

    # sentry-sdk 1.x has no get_client().
    get_client = getattr(sentry_sdk, "get_client", None)
    if get_client is None:
        return False
    client = get_client()
    integration = client.get_integration(DramatiqIntegration)
    return integration is not None and has_tracing_enabled(client.options)


_CHECKS = {"sentry-sdk": _sentry_active}


def check() -> None:
    """Look for other active tracers, and warn once about each one."""
    for name, active in _CHECKS.items():
        if name in _warned or not active():
            continue
        _warned.add(name)
        log.warning(
            "%s also traces Dramatiq in this process, so every message gets "
            "two traces. To trace messages once, %s",
            name,
            _ADVICE[name],
        )


def reset() -> None:
    """Forget the tracers found."""
    _warned.clear()
