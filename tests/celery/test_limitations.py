"""Known limitations from docs/celery.md, each pinned by a strict xfail.

When one of these starts passing, the limitation is gone: update the
Limitations section of docs/celery.md and turn the test into a normal one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from celery import Celery

import jobtrace_celery
from jobtrace._receiver import OtlpReceiver

from .workers import celery_worker, producer


@pytest.mark.integration
@pytest.mark.xfail(
    strict=True,
    reason="docs/celery.md, Limitations: a worker killed with SIGKILL loses "
    "the spans in its batch queue",
)
def test_killed_worker_keeps_finished_spans(
    redis_url: str, receiver: OtlpReceiver
) -> None:
    """Spans of jobs that finished before the main process was killed arrive."""
    options = ("--pool", "prefork", "--concurrency", "1")
    # A long batch delay keeps the finished job's span in the main
    # process's queue when the kill arrives.
    env = {"OTEL_BSP_SCHEDULE_DELAY": "30000"}
    with celery_worker(receiver, redis_url, *options, env=env) as (worker, queue):
        done = producer(redis_url, queue).send_task("it.add", args=(1, 1))
        assert done.get(timeout=60) == 2
        path = f"/proc/{worker.pid}/task/{worker.pid}/children"
        with open(path) as listed:
            children = [int(pid) for pid in listed.read().split()]
        os.kill(worker.pid, signal.SIGKILL)
        for child in children:
            os.kill(child, signal.SIGKILL)
        worker.wait()

    receiver.wait_for_spans(1, timeout=3, name_prefix="process ")


@pytest.mark.xfail(
    strict=True,
    reason="docs/celery.md, Limitations: eager mode produces no send spans",
)
def test_eager_mode_send_span(exporter: Any) -> None:
    """A task run eagerly by delay() also gets a send span."""
    app = Celery("eager", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(name="eager.add")
    def add(x: int, y: int) -> int:
        return x + y

    jobtrace_celery.instrument()
    try:
        assert add.delay(1, 2).get() == 3
    finally:
        jobtrace_celery.uninstrument()

    names = [span.name for span in exporter.get_finished_spans()]
    assert "process eager.add" in names
    assert "send eager.add" in names


SCRIPT = """
import jobtrace
jobtrace.configure()
jobtrace.mark_worker()
from opentelemetry import trace
print(trace.get_tracer_provider().resource.attributes["jobtrace.component"])
"""


@pytest.mark.xfail(
    strict=True,
    reason="docs/celery.md, Limitations: the component comes from the "
    "worker's start hook",
)
def test_component_after_early_build() -> None:
    """A provider built before the worker started still reports worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACE_")}
    env["OTEL_TRACES_EXPORTER"] = "none"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert done.stdout.strip() == "worker"
