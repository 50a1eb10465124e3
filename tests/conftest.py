"""Fixtures shared by every test: an in-memory exporter and service checks."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import _guard, _provider
from jobtrace._receiver import OtlpReceiver

# Tests and the workers they start export no metrics unless a test
# requests them, so that no test sends metrics to the default OTLP endpoint.
os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Route jobtrace's spans to memory through an injected provider."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _provider._reset_for_tests()
    _guard.reset_error_counts()
    jobtrace.configure(tracer_provider=provider)
    yield memory
    _provider._reset_for_tests()
    _guard.reset_error_counts()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver on a free loopback port."""
    with OtlpReceiver() as started:
        yield started


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is down, but fail on CI, where it must run."""
    if _listening(host, port):
        return
    message = f"{name} is not listening on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the local Redis server, database JOBTRACE_TEST_REDIS_DB (15).

    Test runs that share one Redis server at the same time need different
    databases, so that their queues and job records stay apart.
    """
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    database = os.environ.get("JOBTRACE_TEST_REDIS_DB", "15")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{database}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """URL of the local RabbitMQ server as guest."""
    require_service("RabbitMQ", RABBITMQ_HOST, RABBITMQ_PORT)
    return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}//"
