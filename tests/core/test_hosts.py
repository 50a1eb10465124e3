"""Version checks for host libraries."""

from __future__ import annotations

import pytest

import jobtrace
from jobtrace import _hosts


def test_require_host_returns_version() -> None:
    """A host inside the range returns its installed version."""
    found = jobtrace.require_host("pytest >= 1", plugin="jobtrace-test")

    assert found == pytest.__version__


def test_require_host_outside_range() -> None:
    """A host outside the range raises with the range and the version found."""
    with pytest.raises(RuntimeError, match=r"jobtrace-test supports pytest < 1, found"):
        jobtrace.require_host("pytest < 1", plugin="jobtrace-test")


def test_require_host_missing() -> None:
    """A host that is not installed raises a message naming it missing."""
    with pytest.raises(RuntimeError, match=r"found no-such-host \(not installed\)"):
        jobtrace.require_host("no-such-host >= 1", plugin="jobtrace-test")


def test_require_host_invalid_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed version that is not PEP 440 counts as unsupported."""
    monkeypatch.setattr(_hosts, "version", lambda name: "not a version")

    with pytest.raises(RuntimeError, match="found pytest not a version"):
        jobtrace.require_host("pytest >= 1", plugin="jobtrace-test")
