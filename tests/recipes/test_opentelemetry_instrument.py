"""Producers and workers started by opentelemetry-instrument with the distro.

opentelemetry-distro's configurator builds the global tracer provider
before jobtrace's instrumentors load, so jobtrace takes over that
provider's export chain. Each test runs a producer subprocess and a real
worker under ``opentelemetry-instrument``, neither of which calls jobtrace,
and checks over OTLP that the spans arrive with jobtrace's component,
span budget and partial flush.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis

from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from tests.celery import workers as celery_workers
from tests.dramatiq import workers as dramatiq_workers
from tests.rq import workers as rq_workers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
LAUNCHER = str(Path(sys.executable).parent / "opentelemetry-instrument")
WAIT = 60

#: Spans that the ``make_spans`` job ends below its process span.
ROWS = 12
#: Seconds that job sleeps after its spans, while a partial flush exports.
SLEEP = 4.0
BUDGET = 6

#: The distro's defaults are OTLP over gRPC for traces, metrics and logs,
#: but the receiver speaks OTLP/HTTP. The other variables make the budget
#: small and the partial flush early.
AUTO_ENV = {
    "TEST_INSTRUMENT": "0",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "JOBTRACE_MAX_SPANS_PER_TRACE": str(BUDGET),
    "JOBTRACE_PARTIAL_FLUSH_SPANS": "2",
    # Only jobtrace traces Celery, so each job has one process span.
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery",
}


@contextmanager
def worker(
    host: str, receiver: OtlpReceiver, redis_url: str, queue: str
) -> Iterator[str]:
    """Run the host's worker under opentelemetry-instrument, and yield its queue.

    The Celery worker helper picks its own queue name, so the producer
    must enqueue to the yielded name.
    """
    launcher = (LAUNCHER,)
    if host == "celery":
        with celery_workers.celery_worker(
            receiver, redis_url, "--pool", "prefork", "--concurrency", "1",
            env=AUTO_ENV, launcher=launcher,
        ) as (_, celery_queue):  # fmt: skip
            yield celery_queue
    elif host == "rq":
        with rq_workers.rq_worker(
            receiver, redis_url, queue, env=AUTO_ENV, launcher=launcher
        ):
            yield queue
    else:
        target = dramatiq_workers.Target(redis_url, queue, queue, redis_url)
        with dramatiq_workers.dramatiq_worker(
            receiver, target, processes=1, threads=1, env=AUTO_ENV,
            launcher=launcher,
        ):  # fmt: skip
            yield queue


def enqueue(receiver: OtlpReceiver, host: str, url: str, queue: str) -> list[str]:
    """Run the producer under opentelemetry-instrument, and return the job ids."""
    env = rq_workers.worker_env(receiver)
    env.update(AUTO_ENV)
    command = [
        LAUNCHER, sys.executable, "-m", "tests.recipes.auto_producer",
        host, url, queue, str(ROWS), str(SLEEP), queue,
    ]  # fmt: skip
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, timeout=WAIT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    ids: list[str] = json.loads(done.stdout.decode().splitlines()[-1])
    return ids


def process_span(spans: list[ReceivedSpan], job_id: str) -> ReceivedSpan | None:
    """Return the process span of ``job_id`` among ``spans``, if it arrived."""
    for span in spans:
        if span.name.startswith("process ") and (
            span.attributes.get("messaging.message.id") == job_id
        ):
            return span
    return None


def rows_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == "row"]


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    """A fresh queue name, whose keys are deleted from Redis after the test."""
    name = f"jobtrace-auto-{uuid.uuid4().hex[:8]}"
    yield name
    with Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(f"*{name}*"))
        if keys:
            client.delete(*keys)


@pytest.mark.parametrize("host", ["celery", "rq", "dramatiq"])
def test_distro_traces_producer_and_worker(
    host: str, receiver: OtlpReceiver, redis_url: str, queue_name: str
) -> None:
    """Send and process spans arrive, with component, budget and partial flush."""
    with worker(host, receiver, redis_url, queue_name) as queue:
        add_id, spans_id = enqueue(receiver, host, redis_url, queue)
        # The job sleeps after its spans, so a partial flush exports some of
        # them while its process span is still open.
        early = receiver.wait_for(lambda spans: bool(rows_of(spans)), timeout=WAIT)
        assert process_span(early, spans_id) is None
        receiver.wait_for(
            lambda spans: (
                process_span(spans, spans_id) is not None
                and process_span(spans, add_id) is not None
            ),
            timeout=WAIT,
        )

    spans = receiver.spans()
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in spans
        if s.name.startswith("send ")
    }
    run = process_span(spans, add_id)
    root = process_span(spans, spans_id)
    assert run is not None
    assert root is not None

    # The producer's send spans come from the distro's provider, with
    # jobtrace's component on its resource.
    send = sends[add_id]
    assert send.resource["jobtrace.component"] == "web"
    assert "telemetry.auto.version" in send.resource
    assert run.resource["jobtrace.component"] == "worker"
    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert [(t, s) for t, s, _ in run.links] == [(send.trace_id, send.span_id)]

    # The span budget pruned the job that made more spans than it allows.
    rows = [s for s in rows_of(spans) if s.trace_id == root.trace_id]
    assert root.attributes["jobtrace.trace.spans_created"] == ROWS + 1
    assert root.attributes["jobtrace.trace.spans_exported"] == len(rows) + 1
    assert len(rows) + 1 <= BUDGET
    assert root.attributes["jobtrace.trace.spans_dropped"] == ROWS - len(rows)
    assert root.attributes["jobtrace.pruned_spans"] == ROWS - len(rows)
    assert {s.resource["jobtrace.component"] for s in rows} == {"worker"}
