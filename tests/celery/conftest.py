"""Fixtures for in-process Celery workers on a real Redis broker."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import Reject

import jobtrace_celery
from jobtrace._receiver import OtlpReceiver

from .workers import traced_producer


class ExpectedError(Exception):
    """An error that a task declares in ``throws``."""


@pytest.fixture(scope="session")
def celery_config(redis_url: str) -> dict[str, Any]:
    """Point the test app at Redis, on a queue of its own."""
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "task_default_queue": f"jobtrace-inprocess-{os.getpid()}",
        "broker_connection_retry_on_startup": False,
    }


@pytest.fixture
def instrumented(exporter: Any) -> Iterator[Any]:
    """Instrument Celery for one test and remove the instrumentation after."""
    jobtrace_celery.instrument()
    yield exporter
    jobtrace_celery.uninstrument()


@pytest.fixture
def tasks(celery_app: Any) -> types.SimpleNamespace:
    """Register the tasks the tests run, before the worker starts."""

    @celery_app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @celery_app.task(name="t.fail")
    def fail() -> None:
        raise ValueError("boom")

    @celery_app.task(name="t.expected", throws=(ExpectedError,))
    def expected() -> None:
        raise ExpectedError("declared")

    @celery_app.task(name="t.flaky", bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self: Any) -> str:
        if self.request.retries < 2:
            raise self.retry(exc=KeyError("again"), countdown=0)
        return "done"

    @celery_app.task(name="t.parent")
    def parent() -> str:
        add.delay(1, 2)
        return "parent"

    @celery_app.task(name="t.reject")
    def reject() -> None:
        raise Reject("no", requeue=False)

    return types.SimpleNamespace(**locals())


@pytest.fixture
def instrumented_producer(receiver: OtlpReceiver) -> Iterator[None]:
    """Instrument this process as a producer that exports to the receiver."""
    with traced_producer(receiver):
        jobtrace_celery.instrument()
        yield
        jobtrace_celery.uninstrument()
