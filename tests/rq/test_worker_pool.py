"""``rq worker-pool`` on Redis, checked over OTLP.

The pool forks its worker processes, and each of them forks a work horse
per job, so a job's spans reach the receiver only if its horse flushes them
before it exits.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rq import Queue

import jobtrace
from jobtrace._receiver import OtlpReceiver

from . import jobs
from .workers import (
    ROOT,
    WORKER_CLASSES,
    by_name,
    link_pairs,
    process_spans_for,
    stop,
    wait_for_exit,
    worker_env,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("rq.worker_pool") is None,
        reason=f"RQ {jobtrace.host_version('rq')} has no rq worker-pool command",
    ),
]


@contextmanager
def rq_worker_pool(
    receiver: OtlpReceiver, url: str, queue: str, workers: int
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``rq worker-pool --burst`` with forking workers and yield the process.

    On exit a pool still running gets one SIGTERM and must stop within 60
    seconds.
    """
    command = [
        sys.executable, "-m", "rq.cli", "worker-pool",
        "-u", url, "-c", "tests.rq.worker_settings",
        "-w", WORKER_CLASSES["forking"],
        "-n", str(workers), "-l", "WARNING", "--burst", queue,
    ]  # fmt: skip
    process = subprocess.Popen(command, env=worker_env(receiver), cwd=ROOT)
    try:
        yield process
    finally:
        stop(process)


def test_worker_pool_delivers_every_span(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """Each of 20 jobs run by a pool of 2 workers gets a linked process span."""
    count = 20
    enqueued = [queue.enqueue(jobs.add, i, i) for i in range(count)]
    with rq_worker_pool(receiver, rq_url, queue.name, workers=2) as pool:
        assert wait_for_exit(pool) == 0

    runs = process_spans_for(receiver, {job.id for job in enqueued})
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in by_name(receiver.spans(), "send tests.rq.jobs.add")
    }
    assert len(runs) == count
    assert len(sends) == count
    for job in enqueued:
        (run,) = runs[job.id]
        send = sends[job.id]
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.resource["jobtrace.component"] == "worker"
        assert link_pairs(run) == [(send.trace_id, send.span_id)]
