"""Start ``celery worker`` subprocesses that export to a test's OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from celery import Celery
from opentelemetry.sdk.trace import TracerProvider

from jobtrace._receiver import OtlpReceiver
from tests import tracing

HERE = Path(__file__).parent
SERVICE_NAME = "jobtrace-it"


def worker_env(receiver: OtlpReceiver, broker_url: str, queue: str) -> dict[str, str]:
    """Environment of a worker subprocess: broker, queue and OTLP endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        TEST_BROKER_URL=broker_url,
        TEST_RESULT_BACKEND=result_backend(),
        TEST_QUEUE=queue,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_BSP_SCHEDULE_DELAY="100",
        JOBTRACE_FLUSH_TIMEOUT="5",
    )
    env.pop("JOBTRACE_COMPONENT", None)
    return env


def result_backend() -> str:
    """Results always go to Redis, whichever broker carries the messages."""
    return "redis://127.0.0.1:6379/14"


@contextmanager
def celery_worker(
    receiver: OtlpReceiver,
    broker_url: str,
    *options: str,
    env: dict[str, str] | None = None,
    launcher: tuple[str, ...] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run a worker on a fresh queue; yield the process and the queue name.

    ``launcher`` is a command that wraps the worker's, such as
    ``opentelemetry-instrument``.

    On exit the worker gets one SIGTERM (warm shutdown) and must stop within
    60 seconds.
    """
    queue = f"jobtrace-it-{uuid.uuid4().hex[:8]}"
    command = [
        *launcher, sys.executable, "-m", "celery", "--app", "worker_app", "worker",
        "--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
        *options,
    ]  # fmt: skip
    full_env = worker_env(receiver, broker_url, queue)
    full_env.update(env or {})
    process = subprocess.Popen(command, env=full_env, cwd=HERE)
    try:
        yield process, queue
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Warm-stop a worker, killing it if it has not exited in 60 seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired as timed_out:
        process.kill()
        process.wait()
        raise AssertionError(
            "worker did not stop within 60 s of SIGTERM"
        ) from timed_out


def producer(broker_url: str, queue: str, protocol: int = 2) -> Celery:
    """A Celery app that sends tasks by name to ``queue``."""
    app = Celery("producer", broker=broker_url, backend=result_backend())
    app.conf.update(task_default_queue=queue, task_protocol=protocol)
    return app


def traced_producer(
    receiver: OtlpReceiver,
) -> AbstractContextManager[TracerProvider]:
    """Export this process's spans to ``receiver`` as component ``web``."""
    return tracing.traced_producer(receiver, SERVICE_NAME)
