"""Rendering of job arguments: redaction, length limit and bounded work."""

from __future__ import annotations

import logging
import time

import pytest

from jobtrace._arguments import DEFAULT_REDACTED_KEYS, render
from jobtrace._settings import DEFAULT_ARGUMENTS_MAX_LENGTH, Settings


class Opaque:
    """An object whose repr would leak a secret."""

    def __repr__(self) -> str:
        return "Opaque(password='hunter2')"


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_passwd", "access_token", "Authorization",
     "X-Api-Key", "apikey", "Set-Cookie", "client_secret"],
)  # fmt: skip
def test_secret_key_redacted(key: str) -> None:
    """A value whose key contains a secret word is replaced."""
    rendered = render({key: "hunter2"}, DEFAULT_REDACTED_KEYS, 200)

    assert rendered == f"{{{key!r}: '[REDACTED]'}}"


def test_nested_secret_redacted() -> None:
    """Secrets are found in mappings inside lists and tuples."""
    value = (1, [{"user": "ann", "auth": {"token": "t0k"}}])

    rendered = render(value, DEFAULT_REDACTED_KEYS, 200)

    assert rendered == "(1, [{'user': 'ann', 'auth': {'token': '[REDACTED]'}}])"


def test_configured_key_redacted() -> None:
    """A key from the configured list is redacted as well."""
    rendered = render({"ssn": "123", "name": "ann"}, ("ssn",), 200)

    assert rendered == "{'ssn': '[REDACTED]', 'name': 'ann'}"


def test_other_objects_show_class() -> None:
    """Objects other than built-in values show their class, never their repr."""
    rendered = render([Opaque(), b"raw", None, 1.5], DEFAULT_REDACTED_KEYS, 200)

    assert rendered == "[<Opaque>, b'raw', None, 1.5]"


def test_huge_int_shows_class() -> None:
    """An int too long for str() is shown as its class."""
    assert render([10**5000], DEFAULT_REDACTED_KEYS, 200) == "[<int>]"


def test_long_value_cut() -> None:
    """A rendering longer than the limit is cut and marked."""
    rendered = render({"blob": "x" * 10_000}, DEFAULT_REDACTED_KEYS, 64)

    assert len(rendered) == 64
    assert rendered.endswith("...")


def test_huge_argument_bounded() -> None:
    """Rendering a million-item list stops at the limit."""
    started = time.perf_counter()

    render(list(range(1_000_000)), DEFAULT_REDACTED_KEYS, 1024)

    assert time.perf_counter() - started < 0.1


def test_deep_nesting_cut() -> None:
    """Containers nested past the depth limit show as an ellipsis."""
    value: list[object] = []
    for _ in range(10):
        value = [value]

    assert "..." in render(value, DEFAULT_REDACTED_KEYS, 200)


def test_settings_argument_defaults() -> None:
    """Arguments are off by default, with the default limit and keys."""
    settings = Settings.from_env({})

    assert settings.record_arguments is False
    assert settings.arguments_max_length == DEFAULT_ARGUMENTS_MAX_LENGTH
    assert settings.redacted_keys == DEFAULT_REDACTED_KEYS


def test_settings_argument_variables() -> None:
    """The variables turn recording on, set the limit and add keys."""
    settings = Settings.from_env(
        {
            "JOBTRACE_RECORD_ARGUMENTS": "true",
            "JOBTRACE_ARGUMENTS_MAX_LENGTH": "300",
            "JOBTRACE_REDACT_KEYS": " SSN, x-tenant-key ,,",
        }
    )

    assert settings.record_arguments is True
    assert settings.arguments_max_length == 300
    assert settings.redacted_keys[-2:] == ("ssn", "x_tenant_key")


@pytest.mark.parametrize("raw", ["0", "5", "-1", "big", "2000000"])
def test_invalid_max_length_ignored(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    """An invalid limit is logged and the default is used."""
    caplog.set_level(logging.WARNING, logger="jobtrace")
    settings = Settings.from_env({"JOBTRACE_ARGUMENTS_MAX_LENGTH": raw})

    assert settings.arguments_max_length == DEFAULT_ARGUMENTS_MAX_LENGTH
    assert "JOBTRACE_ARGUMENTS_MAX_LENGTH" in caplog.text
