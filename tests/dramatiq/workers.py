"""Start ``dramatiq`` worker processes that export to a test's OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import dramatiq.middleware
from opentelemetry.sdk.trace import TracerProvider
from redis import Redis

from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from tests import tracing

from .actors import started_key

ROOT = Path(__file__).parents[2]
DRAMATIQ = Path(sys.executable).parent / "dramatiq"
SERVICE_NAME = "jobtrace-dramatiq-it"
WAIT = 60


@dataclass(frozen=True)
class Target:
    """Where a test's messages go: a broker URL, a namespace and a queue.

    ``redis_url`` is the Redis database that actors and tests share for
    side information, whichever broker carries the messages.
    """

    broker_url: str
    namespace: str
    queue: str
    redis_url: str


def default_middleware() -> list[dramatiq.Middleware]:
    """Return new instances of Dramatiq's default middleware, except Prometheus.

    Dramatiq 1.17 lists Prometheus by default, which makes the ``dramatiq``
    command fork an HTTP server on 0.0.0.0:9191.
    """
    defaults = dramatiq.middleware.default_middleware
    return [m() for m in defaults if m.__name__ != "Prometheus"]


def build_broker(
    url: str, namespace: str, middleware: list[dramatiq.Middleware] | None = None
) -> dramatiq.Broker:
    """Build a Redis or RabbitMQ broker, with the default middleware unless given."""
    if middleware is None:
        middleware = default_middleware()
    if url.startswith("redis://"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, namespace=namespace, middleware=middleware)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(url=url, middleware=middleware)


def worker_env(receiver: OtlpReceiver, target: Target) -> dict[str, str]:
    """Environment of a worker process: the target and the OTLP endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        TEST_BROKER_URL=target.broker_url,
        TEST_NAMESPACE=target.namespace,
        TEST_QUEUE=target.queue,
        TEST_REDIS_URL=target.redis_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_BSP_SCHEDULE_DELAY="100",
        JOBTRACE_FLUSH_TIMEOUT="5",
    )
    env.pop("JOBTRACE_COMPONENT", None)
    env.pop("JOBTRACE_ENABLED", None)
    return env


@contextmanager
def dramatiq_worker(
    receiver: OtlpReceiver,
    target: Target,
    *options: str,
    processes: int = 2,
    threads: int = 4,
    env: dict[str, str] | None = None,
    launcher: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``dramatiq`` on the target's queue and yield its main process.

    ``launcher`` is a command that wraps the worker's, such as
    ``opentelemetry-instrument``. On exit a worker still running gets one
    SIGTERM (graceful shutdown) and must stop within 60 seconds.
    """
    # The console script, as deployments run it. Under ``python -m
    # dramatiq``, a SIGHUP reload runs ``python`` from PATH, which is not
    # this interpreter when its virtual environment is not activated.
    command = [
        *launcher, str(DRAMATIQ), "tests.dramatiq.worker_app",
        "--processes", str(processes), "--threads", str(threads),
        "--queues", target.queue, *options,
    ]  # fmt: skip
    full_env = worker_env(receiver, target)
    full_env.update(env or {})
    process = subprocess.Popen(command, env=full_env, cwd=ROOT)
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Stop a worker with ``signum``, and kill it if it runs after 60 seconds."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired as timed_out:
        process.kill()
        process.wait()
        raise AssertionError("worker did not stop within 60 s") from timed_out


def wait_for_started(target: Target, count: int) -> dict[str, int]:
    """Wait until ``count`` messages of the ``wait`` actor have started.

    Return the pid of the worker process that runs each started message.
    """
    deadline = time.monotonic() + WAIT
    with Redis.from_url(target.redis_url) as client:
        while time.monotonic() < deadline:
            found = client.hgetall(started_key(target.queue))
            if len(found) >= count:
                return {key.decode(): int(pid) for key, pid in found.items()}
            time.sleep(0.05)
    raise AssertionError(f"{count} messages did not start within {WAIT} s")


def traced_producer(
    receiver: OtlpReceiver,
) -> AbstractContextManager[TracerProvider]:
    """Export this process's spans to ``receiver`` as component ``web``."""
    return tracing.traced_producer(receiver, SERVICE_NAME)


def process_spans_for(
    receiver: OtlpReceiver, ids: set[str], count: int = 1, timeout: float = WAIT
) -> dict[str, list[ReceivedSpan]]:
    """Wait for ``count`` process spans of every message id, grouped by id."""

    def grouped(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
        found: dict[str, list[ReceivedSpan]] = {}
        for span in spans:
            message_id = span.attributes.get("messaging.message.id")
            if span.name.startswith("process ") and message_id in ids:
                found.setdefault(str(message_id), []).append(span)
        return found

    def arrived(spans: list[ReceivedSpan]) -> bool:
        found = grouped(spans)
        return all(len(found.get(message_id, [])) >= count for message_id in ids)

    return grouped(receiver.wait_for(arrived, timeout=timeout))


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    """Return the spans called ``name``."""
    return [span for span in spans if span.name == name]


def links_of(span: ReceivedSpan, link_type: str) -> list[tuple[str, str]]:
    """Return the (trace id, span id) pairs that ``span`` links to as ``link_type``."""
    return [
        (trace_id, span_id)
        for trace_id, span_id, attributes in span.links
        if attributes.get("jobtrace.link.type") == link_type
    ]
