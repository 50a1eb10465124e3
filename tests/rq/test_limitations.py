"""Known limitations from docs/rq.md, each pinned by a strict xfail.

When one of these starts passing, the limitation is gone: update the
Limitations section of docs/rq.md and turn the test into a normal one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from rq import Queue

from jobtrace._receiver import OtlpReceiver

from . import jobs
from .conftest import RQ_MAJOR
from .workers import (
    ROOT,
    by_name,
    process_spans_for,
    rq_worker,
    wait_for_exit,
    wait_for_saved_pid,
)

pytestmark = pytest.mark.integration


@pytest.mark.xfail(
    strict=True,
    reason="docs/rq.md, Limitations: a killed work horse loses the spans "
    "it had not exported",
)
def test_killed_horse_keeps_job_spans(
    rq_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """Spans that a job ended before its horse was killed still arrive."""
    job = queue.enqueue(jobs.span_then_sleep, 30)
    env = {"OTEL_BSP_SCHEDULE_DELAY": "5000"}
    with rq_worker(receiver, rq_url, queue.name, "--burst", env=env) as worker:
        horse = wait_for_saved_pid(job)
        time.sleep(0.5)
        os.kill(horse, signal.SIGKILL)
        assert wait_for_exit(worker) == 0

    process_spans_for(receiver, {job.id})
    assert len(by_name(receiver.spans(), "inside")) == 1


class _Unreachable:
    """Stands in for a receiver: an endpoint where nothing listens."""

    def __init__(self) -> None:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        closed.close()


def _burst_seconds(rq_url: str, queue: Queue, env: dict[str, str]) -> float:
    for i in range(10):
        queue.enqueue(jobs.add, i, i)
    started = time.monotonic()
    receiver = _Unreachable()
    with rq_worker(
        receiver,  # type: ignore[arg-type]
        rq_url,
        queue.name,
        "--burst",
        env=env,
    ) as worker:
        assert wait_for_exit(worker) == 0
    return time.monotonic() - started


@pytest.mark.xfail(
    strict=True,
    reason="docs/rq.md, Limitations: an unreachable collector delays every "
    "job by up to JOBTRACE_FLUSH_TIMEOUT",
)
def test_dead_collector_adds_no_delay(rq_url: str, queue: Queue) -> None:
    """Ten jobs finish as fast with an unreachable collector as without jobtrace."""
    baseline = _burst_seconds(rq_url, queue, {"JOBTRACE_ENABLED": "false"})
    unreachable = _burst_seconds(rq_url, queue, {"JOBTRACE_FLUSH_TIMEOUT": "1"})

    assert unreachable < baseline + 0.5


@pytest.mark.skipif(RQ_MAJOR != 2, reason="only RQ 2.x spawns plain Worker horses")
@pytest.mark.xfail(
    strict=True,
    reason="docs/rq.md, Limitations: SpawnWorker horses on RQ 2.x are not instrumented",
)
def test_spawn_horse_traced_on_rq2(
    rq_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """A SpawnWorker's horse on RQ 2.x exports the job's process span."""
    job = queue.enqueue(jobs.add, 1, 1)
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="spawn"
    ) as worker:
        assert wait_for_exit(worker) == 0

    receiver.wait_for_spans(1, timeout=10, name_prefix="process ")
    assert job.id is not None


_EARLY_PROVIDER_SCRIPT = """
import sys
from opentelemetry import trace
from redis import Redis
from rq import Queue
import jobtrace, jobtrace_rq
from tests.rq.worker_classes import InProcessWorker

jobtrace.tracer()
jobtrace_rq.instrument()
queue = Queue(sys.argv[2], connection=Redis.from_url(sys.argv[1]))
worker = InProcessWorker([queue], connection=queue.connection)
worker.work(burst=True, logging_level="WARNING")
print(trace.get_tracer_provider().resource.attributes["jobtrace.component"])
"""


@pytest.mark.xfail(
    strict=True,
    reason="docs/rq.md, Limitations: the component comes from the worker's start",
)
def test_early_provider_marks_worker(rq_url: str, queue: Queue) -> None:
    """A provider built before the worker starts still reports worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="none", PYTHONPATH=str(ROOT))
    env.pop("JOBTRACE_COMPONENT", None)
    command = [sys.executable, "-c", _EARLY_PROVIDER_SCRIPT, rq_url, queue.name]
    finished = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert finished.returncode == 0
    assert finished.stdout.splitlines()[-1] == "worker"
