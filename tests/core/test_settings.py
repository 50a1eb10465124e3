"""Tests for reading ``JOBTRACE_*`` variables into :class:`Settings`."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from jobtrace._settings import (
    DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_MAX_SPANS_PER_TRACE,
    DEFAULT_PARTIAL_FLUSH_SECONDS,
    DEFAULT_PARTIAL_FLUSH_SPANS,
    Settings,
    exporter_choice,
)


@pytest.fixture(autouse=True)
def capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Capture jobtrace's warnings even if an earlier test raised the root level.

    The in-process Celery worker tests leave the root logger at ERROR.
    """
    caplog.set_level(logging.WARNING, logger="jobtrace")


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the WARNING records that jobtrace's settings module wrote."""
    return [
        record
        for record in caplog.records
        if record.name == "jobtrace._settings" and record.levelno == logging.WARNING
    ]


def test_from_env_defaults(caplog: pytest.LogCaptureFixture) -> None:
    """An empty environment gives the documented defaults and no warning."""
    settings = Settings.from_env({})

    assert settings.enabled is True
    assert settings.propagation == "link"
    assert settings.component is None
    assert settings.environment is None
    assert settings.flush_timeout == DEFAULT_FLUSH_TIMEOUT
    assert DEFAULT_FLUSH_TIMEOUT == 5.0
    assert warnings_from(caplog) == []


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env reads the process environment."""
    monkeypatch.setenv("JOBTRACE_PROPAGATION", "child")

    assert Settings.from_env().propagation == "child"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        (" TRUE ", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        (" off ", False),
    ],
)
def test_enabled_words(raw: str, expected: bool) -> None:
    """JOBTRACE_ENABLED accepts the usual boolean words in any case."""
    settings = Settings.from_env({"JOBTRACE_ENABLED": raw})

    assert settings.enabled is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("link", "link"), ("child", "child"), (" Child ", "child"), ("LINK", "link")],
)
def test_propagation_modes(raw: str, expected: str) -> None:
    """JOBTRACE_PROPAGATION accepts link and child, ignoring case and spaces."""
    settings = Settings.from_env({"JOBTRACE_PROPAGATION": raw})

    assert settings.propagation == expected


def test_component_and_environment() -> None:
    """JOBTRACE_COMPONENT and JOBTRACE_ENVIRONMENT are stored stripped."""
    settings = Settings.from_env(
        {"JOBTRACE_COMPONENT": " beat ", "JOBTRACE_ENVIRONMENT": "staging"}
    )

    assert settings.component == "beat"
    assert settings.environment == "staging"


def test_blank_strings_mean_unset() -> None:
    """Whitespace-only values count as unset, not as an empty name."""
    settings = Settings.from_env(
        {
            "JOBTRACE_ENABLED": "  ",
            "JOBTRACE_PROPAGATION": "",
            "JOBTRACE_COMPONENT": "   ",
            "JOBTRACE_ENVIRONMENT": "\t",
            "JOBTRACE_FLUSH_TIMEOUT": " ",
        }
    )

    assert settings == Settings()


@pytest.mark.parametrize(
    ("raw", "expected"), [("2.5", 2.5), ("10", 10.0), (" 0.1 ", 0.1), ("1e-3", 0.001)]
)
def test_flush_timeout_valid(raw: str, expected: float) -> None:
    """JOBTRACE_FLUSH_TIMEOUT accepts any positive finite number of seconds."""
    settings = Settings.from_env({"JOBTRACE_FLUSH_TIMEOUT": raw})

    assert settings.flush_timeout == expected


@pytest.mark.parametrize(
    ("name", "raw", "field", "default"),
    [
        ("JOBTRACE_ENABLED", "maybe", "enabled", True),
        ("JOBTRACE_ENABLED", "2", "enabled", True),
        ("JOBTRACE_PROPAGATION", "parent", "propagation", "link"),
        ("JOBTRACE_PROPAGATION", "link,child", "propagation", "link"),
        ("JOBTRACE_FLUSH_TIMEOUT", "abc", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
        ("JOBTRACE_FLUSH_TIMEOUT", "0", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
        ("JOBTRACE_FLUSH_TIMEOUT", "-2", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
        ("JOBTRACE_FLUSH_TIMEOUT", "inf", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
        ("JOBTRACE_FLUSH_TIMEOUT", "1e400", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
        ("JOBTRACE_FLUSH_TIMEOUT", "nan", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
        ("JOBTRACE_FLUSH_TIMEOUT", "5s", "flush_timeout", DEFAULT_FLUSH_TIMEOUT),
    ],
)
def test_invalid_value_falls_back(
    caplog: pytest.LogCaptureFixture,
    name: str,
    raw: str,
    field: str,
    default: object,
) -> None:
    """An invalid value gives the default and one WARNING naming the variable."""
    settings = Settings.from_env({name: raw})

    records = warnings_from(caplog)
    assert getattr(settings, field) == default
    assert len(records) == 1
    assert name in records[0].getMessage()
    assert repr(raw) in records[0].getMessage()


def test_one_warning_per_invalid_variable(caplog: pytest.LogCaptureFixture) -> None:
    """Two invalid variables give two warnings, one naming each variable."""
    settings = Settings.from_env(
        {"JOBTRACE_ENABLED": "maybe", "JOBTRACE_FLUSH_TIMEOUT": "never"}
    )

    messages = [record.getMessage() for record in warnings_from(caplog)]
    assert settings == Settings()
    assert len(messages) == 2
    assert "JOBTRACE_ENABLED" in messages[0]
    assert "JOBTRACE_FLUSH_TIMEOUT" in messages[1]


def test_valid_values_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    """A fully valid environment writes no warning."""
    Settings.from_env(
        {
            "JOBTRACE_ENABLED": "false",
            "JOBTRACE_PROPAGATION": "child",
            "JOBTRACE_COMPONENT": "worker",
            "JOBTRACE_ENVIRONMENT": "prod",
            "JOBTRACE_FLUSH_TIMEOUT": "3",
        }
    )

    assert warnings_from(caplog) == []


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after they are read."""
    settings = Settings.from_env({})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.enabled = False  # type: ignore[misc]


def test_budget_defaults() -> None:
    """The span budget and partial flush default to the documented values."""
    settings = Settings.from_env({})

    assert settings.max_spans_per_trace == DEFAULT_MAX_SPANS_PER_TRACE == 2048
    assert settings.partial_flush_seconds == DEFAULT_PARTIAL_FLUSH_SECONDS == 10.0
    assert settings.partial_flush_spans == DEFAULT_PARTIAL_FLUSH_SPANS == 300


def test_budget_values_read(caplog: pytest.LogCaptureFixture) -> None:
    """Valid budget values are read as numbers, and 0 turns each one off."""
    on = Settings.from_env(
        {
            "JOBTRACE_MAX_SPANS_PER_TRACE": " 500 ",
            "JOBTRACE_PARTIAL_FLUSH_SECONDS": "2.5",
            "JOBTRACE_PARTIAL_FLUSH_SPANS": "50",
        }
    )
    off = Settings.from_env(
        {
            "JOBTRACE_MAX_SPANS_PER_TRACE": "0",
            "JOBTRACE_PARTIAL_FLUSH_SECONDS": "0",
            "JOBTRACE_PARTIAL_FLUSH_SPANS": "0",
        }
    )

    assert (on.max_spans_per_trace, on.partial_flush_seconds) == (500, 2.5)
    assert on.partial_flush_spans == 50
    assert (off.max_spans_per_trace, off.partial_flush_seconds) == (0, 0.0)
    assert off.partial_flush_spans == 0
    assert warnings_from(caplog) == []


@pytest.mark.parametrize(
    ("name", "raw", "field", "default"),
    [
        ("JOBTRACE_MAX_SPANS_PER_TRACE", "-1", "max_spans_per_trace", 2048),
        ("JOBTRACE_MAX_SPANS_PER_TRACE", "1.5", "max_spans_per_trace", 2048),
        ("JOBTRACE_MAX_SPANS_PER_TRACE", "lots", "max_spans_per_trace", 2048),
        ("JOBTRACE_PARTIAL_FLUSH_SPANS", "-5", "partial_flush_spans", 300),
        ("JOBTRACE_PARTIAL_FLUSH_SECONDS", "-1", "partial_flush_seconds", 10.0),
        ("JOBTRACE_PARTIAL_FLUSH_SECONDS", "inf", "partial_flush_seconds", 10.0),
        ("JOBTRACE_PARTIAL_FLUSH_SECONDS", "10s", "partial_flush_seconds", 10.0),
    ],
)
def test_invalid_budget_falls_back(
    caplog: pytest.LogCaptureFixture,
    name: str,
    raw: str,
    field: str,
    default: object,
) -> None:
    """An invalid budget value gives the default and one WARNING that names
    the expected value."""
    settings = Settings.from_env({name: raw})

    records = warnings_from(caplog)
    assert getattr(settings, field) == default
    assert len(records) == 1
    message = records[0].getMessage()
    assert name in message
    assert repr(raw) in message
    assert "0" in message.split("expected", 1)[1]


EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "none"),
        ({"OTEL_TRACES_EXPORTER": " Console "}, "console"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            "http/protobuf",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "http/protobuf"),
        ({"OTEL_METRICS_EXPORTER": "none"}, "http/protobuf"),
    ],
)
def test_exporter_choice_traces(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """The traces exporter follows its own variables, then the shared ones."""
    for name in EXPORTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert exporter_choice("traces") == expected


def test_exporter_choice_unsupported_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsupported exporter name is logged with its variable."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")

    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        assert exporter_choice("metrics") == "http/protobuf"

    (record,) = caplog.records
    assert "OTEL_METRICS_EXPORTER='prometheus'" in record.getMessage()
