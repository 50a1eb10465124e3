"""Known limitations from docs/rq.md, each pinned by a strict xfail.

When one of these starts passing, the limitation is gone: update the
Limitations section of docs/rq.md and turn the test into a normal one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rq import Queue
from rq.job import JobStatus

from jobtrace._receiver import OtlpReceiver

from . import jobs
from .conftest import RQ_MAJOR
from .workers import (
    ROOT,
    process_spans_for,
    rq_worker,
    wait_for_exit,
)

pytestmark = pytest.mark.integration


@pytest.mark.xfail(
    strict=True,
    reason="docs/rq.md, Limitations: a worker killed with SIGKILL loses the "
    "spans in its batch queue",
)
def test_killed_worker_keeps_finished_spans(
    rq_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """Spans of jobs that finished before the worker was killed still arrive."""
    job = queue.enqueue(jobs.add, 1, 1)
    # A long batch delay keeps the finished job's span in the worker's queue.
    env = {"OTEL_BSP_SCHEDULE_DELAY": "30000"}
    with rq_worker(receiver, rq_url, queue.name, env=env) as worker:
        deadline = time.monotonic() + 20
        while job.get_status() != JobStatus.FINISHED:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        wait_for_exit(worker)

    process_spans_for(receiver, {job.id}, timeout=3)


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
from rq.job import JobStatus
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
