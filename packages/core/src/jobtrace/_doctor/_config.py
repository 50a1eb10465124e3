"""The effective ``JOBTRACE_*`` settings and the ``OTEL_*`` variables."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from jobtrace import _settings
from jobtrace._doctor._finding import Finding
from jobtrace._doctor._masking import mask_variable

#: ``OTEL_*`` variables that change what jobtrace exports, with the value
#: used when they are unset (from the OpenTelemetry SDK's documentation and
#: jobtrace's provider), or an empty string when unset means "not used".
OTEL_VARIABLES = {
    "OTEL_SDK_DISABLED": "false",
    "OTEL_SERVICE_NAME": "unknown_service",
    "OTEL_RESOURCE_ATTRIBUTES": "",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_HEADERS": "",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "",
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    "OTEL_TRACES_SAMPLER_ARG": "",
    "OTEL_PROPAGATORS": "tracecontext,baggage",
    "OTEL_BSP_SCHEDULE_DELAY": "5000",
    "OTEL_BSP_MAX_QUEUE_SIZE": "2048",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
    "OTEL_BSP_EXPORT_TIMEOUT": "30000",
    "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "cumulative",
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
}

#: The ``JOBTRACE_*`` variable of each :class:`jobtrace._settings.Settings`
#: field whose name is not simply the field's name in upper case.
_VARIABLE_OF_FIELD = {"redacted_keys": "JOBTRACE_REDACT_KEYS"}
#: Variables under the ``JOBTRACE_`` prefix that the test suite reads.
_TEST_VARIABLES = frozenset({"JOBTRACE_TEST_REDIS_DB"})


@dataclasses.dataclass(frozen=True)
class Variable:
    """One setting as the report shows it: masked, and where it came from."""

    name: str
    value: str
    source: str  # "environment", "default" or "unset"

    def as_dict(self) -> dict[str, str]:
        """Return the fields as a dict, for ``--json``."""
        return dataclasses.asdict(self)


def read_settings(
    environ: Mapping[str, str],
) -> tuple[_settings.Settings, list[Variable], list[Finding]]:
    """Read the ``JOBTRACE_*`` settings as jobtrace's settings module does.

    Each WARNING that the settings module logs for an invalid value
    becomes a problem, and each ``JOBTRACE_*`` variable that no setting
    reads becomes a warning, because it is most likely a misspelling.
    """
    captured = _CapturedRecords()
    logger = logging.getLogger(_settings.__name__)
    logger.addHandler(captured)
    propagate, logger.propagate = logger.propagate, False
    # An imported app may have raised the root logger's level (Celery's
    # start_worker() sets ERROR), which would drop the warnings unseen.
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        current = _settings.Settings.from_env(environ)
    finally:
        logger.setLevel(level)
        logger.propagate = propagate
        logger.removeHandler(captured)

    variables = []
    known = set()
    for field in dataclasses.fields(current):
        name = _VARIABLE_OF_FIELD.get(field.name, "JOBTRACE_" + field.name.upper())
        known.add(name)
        text = _text_of(getattr(current, field.name))
        source = "environment" if environ.get(name, "").strip() else "default"
        if not text:
            source = "unset"
        variables.append(Variable(name, mask_variable(name, text), source))

    findings = [
        Finding(
            "settings",
            "problem",
            record.getMessage(),
            fix=f"set {_variable_in(record)} to a valid value, or unset it",
        )
        for record in captured.records
    ]
    for name in sorted(environ):
        if name.startswith("JOBTRACE_") and name not in known | _TEST_VARIABLES:
            findings.append(
                Finding(
                    "settings",
                    "warning",
                    f"{name} is not a jobtrace setting, so nothing reads it",
                    fix="check its spelling against docs/reference.md#settings",
                )
            )
    return current, variables, findings


def read_otel(environ: Mapping[str, str], extra: tuple[str, ...]) -> list[Variable]:
    """Return the ``OTEL_*`` variables that matter to jobtrace, masked.

    Unset variables of :data:`OTEL_VARIABLES` are listed with their
    default. Every other ``OTEL_*`` variable that is set follows.
    """
    variables = []
    for name, default in OTEL_VARIABLES.items():
        value = environ.get(name)
        if value is not None:
            variables.append(
                Variable(name, mask_variable(name, value, extra), "environment")
            )
        elif default:
            variables.append(Variable(name, default, "default"))
        else:
            variables.append(Variable(name, "", "unset"))
    for name in sorted(environ):
        if name.startswith("OTEL_") and name not in OTEL_VARIABLES:
            value = mask_variable(name, environ[name], extra)
            variables.append(Variable(name, value, "environment"))
    return variables


def disabled_findings(
    current: _settings.Settings, environ: Mapping[str, str]
) -> list[Finding]:
    """Return a warning for each variable that turns jobtrace off."""
    findings = []
    if not current.enabled:
        findings.append(
            Finding(
                "settings",
                "warning",
                "JOBTRACE_ENABLED is false, so instrument() instruments nothing",
                fix="unset JOBTRACE_ENABLED to trace jobs",
            )
        )
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        findings.append(
            Finding(
                "settings",
                "warning",
                "OTEL_SDK_DISABLED is true, which turns jobtrace off too",
                fix="unset OTEL_SDK_DISABLED to trace jobs",
            )
        )
    return findings


def _text_of(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return "" if value is None else str(value)


def _variable_in(record: logging.LogRecord) -> str:
    # The settings module logs "Invalid %s=%r, ..." with the name first.
    args = record.args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return "the variable"


class _CapturedRecords(logging.Handler):
    """A handler that stores the records of one logger instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
