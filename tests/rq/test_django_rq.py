"""django-rq set up as docs/rq.md describes, with real Django processes.

The test app calls ``jobtrace_rq.instrument()`` in ``AppConfig.ready()``.
A management command enqueues jobs in each way django-rq offers, then
``python -m django rqworker --burst`` runs them, and the test checks over
OTLP that every run links to its send span.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue

from jobtrace._receiver import OtlpReceiver

from .workers import (
    ROOT,
    WAIT,
    WORKER_CLASSES,
    by_name,
    link_pairs,
    process_spans_for,
    wait_for_exit,
    worker_env,
)

pytestmark = [
    pytest.mark.integration,
    # Only look django_rq up, because importing it needs Django settings.
    pytest.mark.skipif(
        importlib.util.find_spec("django_rq") is None,
        reason="django-rq is not installed",
    ),
]


@pytest.fixture
def default_queue(connection: Redis) -> Iterator[Queue]:
    """RQ's queue called default, which ``django_rq.enqueue`` uses, emptied."""
    default = Queue("default", connection=connection)
    default.delete(delete_jobs=True)
    yield default
    default.delete(delete_jobs=True)


def test_django_rq_jobs_linked(
    rq_url: str, queue: Queue, default_queue: Queue, receiver: OtlpReceiver
) -> None:
    """Jobs enqueued through django-rq run in rqworker, linked to their sends."""
    env = worker_env(receiver)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.rq.django_shop.settings",
        TEST_RQ_URL=rq_url,
        TEST_RQ_QUEUE=queue.name,
    )
    django = [sys.executable, "-m", "django"]
    producer = subprocess.run(
        [*django, "enqueue_test_jobs"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert producer.returncode == 0, producer.stderr
    ids = json.loads(producer.stdout)
    request_span_id = ids.pop("request_span_id")
    # Like the other tests, run the forking worker class without RQ's
    # command listener (see worker_classes.py).
    worker = subprocess.Popen(
        [
            *django, "rqworker", "--burst", "--verbosity", "0",
            "--worker-class", WORKER_CLASSES["forking"],
            default_queue.name, queue.name,
        ],
        env=env, cwd=ROOT,
    )  # fmt: skip
    assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, set(ids.values()))
    sends = {
        span.attributes["messaging.message.id"]: span
        for span in receiver.spans()
        if span.name.startswith("send ")
    }
    (request,) = by_name(receiver.spans(), "request")
    assert request.span_id == request_span_id
    for way, job_id in ids.items():
        (run,) = runs[job_id]
        send = sends[job_id]
        assert run.attributes["jobtrace.job.outcome"] == "success", way
        assert link_pairs(run) == [(send.trace_id, send.span_id)], way
        assert send.parent_span_id == request.span_id, way
        assert send.resource["jobtrace.component"] == "web", way
        assert run.resource["jobtrace.component"] == "worker", way
    assert sends[ids["delay"]].name == "send tests.rq.django_shop.tasks.multiply"
