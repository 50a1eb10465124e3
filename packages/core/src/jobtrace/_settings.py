"""Settings read from ``JOBTRACE_*`` environment variables."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: Propagation modes. ``link`` starts a new trace per job and links it to
#: the send span; ``child`` makes the process span a child of the send span.
PROPAGATION_MODES = ("link", "child")

#: Flush and shutdown time limit in seconds when JOBTRACE_FLUSH_TIMEOUT is unset.
DEFAULT_FLUSH_TIMEOUT = 5.0

_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Process-wide options, one field per ``JOBTRACE_*`` variable."""

    enabled: bool = True
    propagation: str = "link"
    component: str | None = None
    environment: str | None = None
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings, falling back to defaults for invalid values.

        An invalid value is logged at WARNING with the variable's name and
        the default used instead, so a typo never stops a worker.
        """
        env = os.environ if environ is None else environ
        return cls(
            enabled=_read_bool(env, "JOBTRACE_ENABLED", default=True),
            propagation=_read_choice(
                env, "JOBTRACE_PROPAGATION", PROPAGATION_MODES, default="link"
            ),
            component=env.get("JOBTRACE_COMPONENT", "").strip() or None,
            environment=env.get("JOBTRACE_ENVIRONMENT", "").strip() or None,
            flush_timeout=_read_seconds(
                env, "JOBTRACE_FLUSH_TIMEOUT", default=DEFAULT_FLUSH_TIMEOUT
            ),
        )


def _read_bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE_WORDS:
        return True
    if raw in _FALSE_WORDS:
        return False
    log.warning("Invalid %s=%r, expected true or false; using %s", name, raw, default)
    return default


def _read_choice(
    env: Mapping[str, str], name: str, choices: tuple[str, ...], *, default: str
) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in choices:
        return raw
    log.warning(
        "Invalid %s=%r, expected one of %s; using %s",
        name,
        raw,
        ", ".join(choices),
        default,
    )
    return default


def _read_seconds(env: Mapping[str, str], name: str, *, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value > 0 and value != float("inf"):
        return value
    log.warning(
        "Invalid %s=%r, expected a positive number of seconds; using %s",
        name,
        raw,
        default,
    )
    return default
