"""Warnings about other tracers of the same host, shared by the plugins."""

from __future__ import annotations

import logging
import sys
import types

import pytest

import jobtrace

LOG = logging.getLogger("tests.other_tracers")


def _tracers(active: dict[str, bool], found: list[str]) -> jobtrace.OtherTracers:
    return jobtrace.OtherTracers(
        "Celery",
        "job",
        {name: (lambda name=name: active[name]) for name in active},
        {name: f"switch {name} off" for name in active},
        LOG,
        on_found=lambda: found.append("moved"),
        note="jobtrace moved its headers.",
    )


def test_warns_once_per_tracer(caplog: pytest.LogCaptureFixture) -> None:
    """Each active tracer gets one warning, and only active ones do."""
    caplog.set_level(logging.WARNING, logger=LOG.name)
    active = {"sentry-sdk": True, "ddtrace": False}
    found: list[str] = []
    tracers = _tracers(active, found)

    tracers.check()
    tracers.check()
    active["ddtrace"] = True
    tracers.check()

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0] == (
        "sentry-sdk also traces Celery in this process, so every job gets two "
        "traces. jobtrace moved its headers. To trace jobs once, switch "
        "sentry-sdk off"
    )
    assert messages[1].startswith("ddtrace also traces Celery")
    assert found == ["moved", "moved"]
    assert all(record.name == LOG.name for record in caplog.records)


def test_reset_warns_again(caplog: pytest.LogCaptureFixture) -> None:
    """After reset(), a tracer still active is reported again."""
    caplog.set_level(logging.WARNING, logger=LOG.name)
    tracers = _tracers({"ddtrace": True}, [])

    tracers.check()
    tracers.reset()
    tracers.check()

    assert len(caplog.records) == 2


def test_missing_advice_rejected() -> None:
    """Every tracer checked needs the advice that its warning gives."""
    with pytest.raises(ValueError, match="no advice for ddtrace"):
        jobtrace.OtherTracers("RQ", "job", {"ddtrace": lambda: True}, {}, LOG)


def test_sentry_integration_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """No integration module imported means no integration set up."""
    monkeypatch.delitem(sys.modules, "sentry_sdk.integrations.rq", raising=False)

    assert (
        jobtrace.sentry_integration("sentry_sdk.integrations.rq", "RqIntegration")
        is None
    )


def test_sentry_integration_of_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client and the integration it set up are returned together."""
    pytest.importorskip("sentry_sdk")
    import sentry_sdk

    class Integration:
        pass

    integration = Integration()
    client = types.SimpleNamespace(
        get_integration=lambda cls: integration if cls is Integration else None
    )
    module = types.ModuleType("sentry_sdk.integrations.fake")
    module.FakeIntegration = Integration  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(sentry_sdk, "get_client", lambda: client)

    found = jobtrace.sentry_integration(module.__name__, "FakeIntegration")

    assert found == (client, integration)
