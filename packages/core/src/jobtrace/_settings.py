"""Settings read from ``JOBTRACE_*`` environment variables."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from jobtrace._arguments import DEFAULT_REDACTED_KEYS

log = logging.getLogger(__name__)

#: Propagation modes. ``link`` starts a new trace per job and links it to
#: the send span; ``child`` makes the process span a child of the send span.
PROPAGATION_MODES = ("link", "child")

#: Flush and shutdown time limit in seconds when JOBTRACE_FLUSH_TIMEOUT is unset.
DEFAULT_FLUSH_TIMEOUT = 5.0
#: Spans one process exports per local trace when JOBTRACE_MAX_SPANS_PER_TRACE
#: is unset. Sentry's SDKs cap a transaction at 1,000 spans, so a lower
#: setting suits such backends.
DEFAULT_MAX_SPANS_PER_TRACE = 2048
#: Seconds between partial flushes of a running trace's finished spans.
DEFAULT_PARTIAL_FLUSH_SECONDS = 10.0
#: Finished spans of one running trace that start a partial flush, as in
#: Datadog's Python tracer (DD_TRACE_PARTIAL_FLUSH_MIN_SPANS).
DEFAULT_PARTIAL_FLUSH_SPANS = 300
#: Maximum characters of each recorded argument attribute when
#: JOBTRACE_ARGUMENTS_MAX_LENGTH is unset.
DEFAULT_ARGUMENTS_MAX_LENGTH = 1024

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
    max_spans_per_trace: int = DEFAULT_MAX_SPANS_PER_TRACE
    partial_flush_seconds: float = DEFAULT_PARTIAL_FLUSH_SECONDS
    partial_flush_spans: int = DEFAULT_PARTIAL_FLUSH_SPANS
    record_arguments: bool = False
    arguments_max_length: int = DEFAULT_ARGUMENTS_MAX_LENGTH
    redacted_keys: tuple[str, ...] = DEFAULT_REDACTED_KEYS

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
            max_spans_per_trace=_read_count(
                env, "JOBTRACE_MAX_SPANS_PER_TRACE", default=DEFAULT_MAX_SPANS_PER_TRACE
            ),
            partial_flush_seconds=_read_seconds(
                env,
                "JOBTRACE_PARTIAL_FLUSH_SECONDS",
                default=DEFAULT_PARTIAL_FLUSH_SECONDS,
                allow_zero=True,
            ),
            partial_flush_spans=_read_count(
                env, "JOBTRACE_PARTIAL_FLUSH_SPANS", default=DEFAULT_PARTIAL_FLUSH_SPANS
            ),
            record_arguments=_read_bool(
                env, "JOBTRACE_RECORD_ARGUMENTS", default=False
            ),
            arguments_max_length=_read_length(
                env, "JOBTRACE_ARGUMENTS_MAX_LENGTH", DEFAULT_ARGUMENTS_MAX_LENGTH
            ),
            redacted_keys=DEFAULT_REDACTED_KEYS
            + _read_keys(env, "JOBTRACE_REDACT_KEYS"),
        )


def exporter_choice(signal: str) -> str:
    """Return the exporter that the ``OTEL_*`` variables choose for a signal.

    ``signal`` is ``traces`` or ``metrics``. The result is ``none``,
    ``console``, ``grpc`` or ``http/protobuf``. An unsupported exporter or
    protocol is logged at WARNING and read as the OTLP/HTTP default.
    """
    upper = signal.upper()
    variable = f"OTEL_{upper}_EXPORTER"
    name = os.environ.get(variable, "otlp").strip().lower()
    if name in ("none", "console"):
        return name
    if name != "otlp":
        log.warning(
            "Unsupported %s=%r, expected otlp, console or none; using otlp",
            variable,
            name,
        )
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in ("grpc", "http/protobuf"):
        log.warning("Unsupported OTLP protocol %r, using http/protobuf", protocol)
        return "http/protobuf"
    return protocol


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


def _read_length(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.isdigit() and 16 <= int(raw) <= 1_000_000:
        return int(raw)
    log.warning(
        "Invalid %s=%r, expected a number of characters from 16 to 1000000; using %s",
        name,
        raw,
        default,
    )
    return default


def _read_keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    keys = (part.strip().lower().replace("-", "_") for part in raw.split(","))
    return tuple(key for key in keys if key)


def _read_seconds(
    env: Mapping[str, str], name: str, *, default: float, allow_zero: bool = False
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if (value > 0 or (allow_zero and value == 0)) and value != float("inf"):
        return value
    expected = "0 (off) or a positive number" if allow_zero else "a positive number"
    log.warning(
        "Invalid %s=%r, expected %s of seconds; using %s",
        name,
        raw,
        expected,
        default,
    )
    return default


def _read_count(env: Mapping[str, str], name: str, *, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value >= 0:
        return value
    log.warning(
        "Invalid %s=%r, expected a whole number, 0 or more (0 turns it off); using %s",
        name,
        raw,
        default,
    )
    return default
