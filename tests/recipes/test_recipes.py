"""The setups of docs/recipes.md, each run with real processes.

Each test starts a real worker (``celery worker``, or django_dramatiq's
``rundramatiq``) and a producer subprocess of the recipe's project, both
exporting to an OTLP receiver on 127.0.0.1, and checks the send and process
spans that the receiver decoded. The recipes whose setup other tests run
already are listed in ``RECIPE_SOURCES`` of test_recipes_page.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis

from jobtrace._receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
WAIT = 60
SERVICE_NAME = "jobtrace-recipes"


def project_env(
    receiver: OtlpReceiver, project: str, **variables: str
) -> dict[str, str]:
    """Environment of a project's process: its directory on the path, OTLP."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("JOBTRACE_COMPONENT", None)
    env.pop("JOBTRACE_ENABLED", None)
    env.update(
        PYTHONPATH=str(HERE / project),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_BSP_SCHEDULE_DELAY="100",
        **variables,
    )
    return env


@contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[None]:
    """Run a worker, and on exit send it SIGTERM and wait up to 60 s."""
    process = subprocess.Popen(command, env=env, cwd=cwd)
    try:
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired as timed_out:
            process.kill()
            process.wait()
            raise AssertionError("worker did not stop within 60 s") from timed_out


def produce(command: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run a producer to its end, and return the job id it printed last."""
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, timeout=WAIT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().split()[-1]


def job_spans(receiver: OtlpReceiver, job_id: str) -> tuple[ReceivedSpan, ReceivedSpan]:
    """Wait for the send and process spans of ``job_id``, and return both."""

    def of_job(spans: list[ReceivedSpan], operation: str) -> list[ReceivedSpan]:
        return [
            s for s in spans
            if s.name.startswith(f"{operation} ")
            and s.attributes.get("messaging.message.id") == job_id
        ]  # fmt: skip

    spans = receiver.wait_for(
        lambda found: bool(of_job(found, "send")) and bool(of_job(found, "process")),
        timeout=WAIT,
    )
    (send,) = of_job(spans, "send")
    (run,) = of_job(spans, "process")
    return send, run


def assert_traced(send: ReceivedSpan, run: ReceivedSpan) -> None:
    """The producer's send span and the worker's linked process span."""
    assert send.resource["jobtrace.component"] == "web"
    assert run.resource["jobtrace.component"] == "worker"
    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert [(t, s) for t, s, _ in run.links] == [(send.trace_id, send.span_id)]


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    """A fresh queue name, whose keys are deleted from Redis after the test."""
    name = f"jobtrace-recipe-{uuid.uuid4().hex[:8]}"
    yield name
    with Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(f"*{name}*"))
        if keys:
            client.delete(*keys)


def test_celery_with_django(
    receiver: OtlpReceiver, redis_url: str, queue_name: str
) -> None:
    """proj/celery.py instruments the worker and the Django web process."""
    cwd = HERE / "celery_django"
    env = project_env(
        receiver, "celery_django", TEST_BROKER_URL=redis_url, TEST_QUEUE=queue_name
    )
    worker = [
        sys.executable, "-m", "celery", "-A", "proj", "worker",
        "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with running(worker, env, cwd):
        web = {**env, "DJANGO_SETTINGS_MODULE": "proj.settings"}
        job_id = produce([sys.executable, "-m", "django", "enqueue_add"], web, cwd)
        send, run = job_spans(receiver, job_id)

    assert_traced(send, run)
    assert run.name == "process shop.add"


def test_celery_with_flask(
    receiver: OtlpReceiver, redis_url: str, queue_name: str
) -> None:
    """celery_init_app instruments the worker and the Flask request."""
    cwd = HERE / "flask_app"
    env = project_env(
        receiver, "flask_app", TEST_BROKER_URL=redis_url, TEST_QUEUE=queue_name
    )
    worker = [
        sys.executable, "-m", "celery", "-A", "flask_shop.make_celery", "worker",
        "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with running(worker, env, cwd):
        job_id = produce([sys.executable, "-m", "flask_shop.post_add"], env, cwd)
        send, run = job_spans(receiver, job_id)

    assert_traced(send, run)
    assert run.name == "process flask_shop.add"


def test_django_dramatiq_rundramatiq(
    receiver: OtlpReceiver, redis_url: str, queue_name: str
) -> None:
    """Tracing first in MIDDLEWARE traces rundramatiq and the web process."""
    cwd = HERE / "dramatiq_django"
    env = project_env(
        receiver, "dramatiq_django",
        TEST_BROKER_URL=redis_url, TEST_NAMESPACE=queue_name,
        TEST_QUEUE=queue_name, DJANGO_SETTINGS_MODULE="site_settings.settings",
    )  # fmt: skip
    worker = [
        sys.executable, "-m", "django", "rundramatiq",
        "--processes", "1", "--threads", "1", "--queues", queue_name,
    ]  # fmt: skip
    with running(worker, env, cwd):
        job_id = produce([sys.executable, "-m", "django", "send_welcome"], env, cwd)
        send, run = job_spans(receiver, job_id)

    assert_traced(send, run)
    assert run.name == "process send_welcome"
