"""Other tracers that trace the same job system in this process.

Each plugin checks in its own way whether opentelemetry-contrib's
instrumentation of its host, sentry-sdk or ddtrace is active. This module
contains what the plugins share: one warning per tracer found, and the
lookup of a sentry-sdk integration.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any


class OtherTracers:
    """The other tracers of one host, each reported once per process.

    ``checks`` maps a tracer's name to a function that returns whether the
    tracer is active, and ``advice`` maps it to the setting that leaves a
    single tracer. ``item`` names what the host runs ("job", "message").
    ``on_found`` runs before the first warning about each tracer, for a
    plugin that moves its context to other headers, and ``note`` is the
    sentence of the warning that reports that move.
    """

    def __init__(
        self,
        host: str,
        item: str,
        checks: Mapping[str, Callable[[], bool]],
        advice: Mapping[str, str],
        log: logging.Logger,
        *,
        on_found: Callable[[], object] | None = None,
        note: str = "",
    ) -> None:
        missing = set(checks) - set(advice)
        if missing:
            raise ValueError(f"no advice for {', '.join(sorted(missing))}")
        self.host = host
        self.item = item
        self._checks = dict(checks)
        self._advice = dict(advice)
        self._log = log
        self._on_found = on_found
        self._note = f" {note}" if note else ""
        self._warned: set[str] = set()

    def check(self) -> None:
        """Look for the other tracers, and warn once about each one found."""
        for name, active in self._checks.items():
            if name in self._warned or not active():
                continue
            self._warned.add(name)
            if self._on_found is not None:
                self._on_found()
            self._log.warning(
                "%s also traces %s in this process, so every %s gets two "
                "traces.%s To trace %ss once, %s",
                name,
                self.host,
                self.item,
                self._note,
                self.item,
                self._advice[name],
            )

    def reset(self) -> None:
        """Forget the tracers found, so that each is reported again."""
        self._warned.clear()


def sentry_integration(module: str, name: str) -> tuple[Any, Any] | None:
    """Return sentry-sdk's client and its integration ``name`` of ``module``.

    Returns None when ``module`` was never imported, because sentry-sdk
    imports it only to set the integration up, and when the client has no
    such integration.
    """
    integrations = sys.modules.get(module)
    # Importing the integration module imported sentry_sdk.
    sentry_sdk = sys.modules.get("sentry_sdk")
    if integrations is None or sentry_sdk is None:
        return None
    # sentry-sdk 1.x has no get_client().
    get_client = getattr(sentry_sdk, "get_client", None)
    if get_client is None:
        return None
    client = get_client()
    integration = client.get_integration(getattr(integrations, name))
    if integration is None:
        return None
    return client, integration
