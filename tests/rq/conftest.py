"""Fixtures for RQ tests: a Redis database of their own and fresh queues."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from rq import Queue

import jobtrace
import jobtrace_rq
from jobtrace._receiver import OtlpReceiver

from .worker_classes import InProcessWorker
from .workers import traced_producer

RQ_MAJOR = int((jobtrace.host_version("rq") or "0").split(".")[0])

#: Redis database of the RQ tests, apart from the other suites' databases,
#: unless JOBTRACE_TEST_REDIS_DB picks one for the whole test run.
RQ_DB = 13


@pytest.fixture(scope="session")
def rq_url(redis_url: str) -> str:
    """URL of the local Redis server, database 13 or JOBTRACE_TEST_REDIS_DB.

    Test runs that share one Redis server at the same time set
    JOBTRACE_TEST_REDIS_DB to keep apart, so the RQ tests follow it too.
    """
    if os.environ.get("JOBTRACE_TEST_REDIS_DB"):
        return redis_url
    return redis_url.rsplit("/", 1)[0] + f"/{RQ_DB}"


@pytest.fixture
def connection(rq_url: str) -> Iterator[Redis]:
    """A Redis connection to the RQ tests' database."""
    client = Redis.from_url(rq_url)
    yield client
    client.close()


@pytest.fixture
def queue(connection: Redis) -> Iterator[Queue]:
    """A queue with a fresh name, deleted with its jobs after the test."""
    created = Queue(f"jobtrace-rq-{uuid.uuid4().hex[:8]}", connection=connection)
    yield created
    created.delete(delete_jobs=True)


@pytest.fixture
def instrumented(exporter: Any) -> Iterator[Any]:
    """Instrument RQ for one test and remove the instrumentation after."""
    jobtrace_rq.instrument()
    yield exporter
    jobtrace_rq.uninstrument()


def work(queue: Queue) -> None:
    """Run every job on ``queue`` in this process, then return."""
    InProcessWorker([queue], connection=queue.connection).work(
        burst=True, logging_level="WARNING"
    )


@pytest.fixture
def producer(receiver: OtlpReceiver) -> Iterator[None]:
    """Instrument this process as a producer that exports to the receiver."""
    with traced_producer(receiver):
        jobtrace_rq.instrument()
        yield
        jobtrace_rq.uninstrument()
