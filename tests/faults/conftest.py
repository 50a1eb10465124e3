"""Fixtures for the fault tests: worker hosts, one host per parameter."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .hosts import HOSTS, Host, make_host


@pytest.fixture(params=HOSTS)
def host_name(request: pytest.FixtureRequest) -> str:
    """Each test runs once per host."""
    return str(request.param)


@pytest.fixture
def host(host_name: str, request: pytest.FixtureRequest) -> Host:
    """A host of the parameter's kind, with a queue of its own."""
    return make_host(host_name, request)


@pytest.fixture
def new_host(host_name: str, request: pytest.FixtureRequest) -> Callable[[], Host]:
    """Return a factory of hosts of the parameter's kind, each with its queue."""
    return lambda: make_host(host_name, request)
