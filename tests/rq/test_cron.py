"""Jobs that RQ's cron scheduler enqueues, from a real ``rq cron`` process.

``rq cron`` enqueues an interval job when it starts and again after each
interval. The test runs the scheduler until two jobs are waiting, stops it,
then runs a worker, and checks over OTLP that each run links to the send
span that the scheduler process exported.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import pytest
from rq import Queue

from jobtrace._receiver import OtlpReceiver

from .workers import (
    ROOT,
    WAIT,
    by_name,
    link_pairs,
    process_spans_for,
    rq_worker,
    stop,
    wait_for_exit,
    worker_env,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("rq.cron") is None,
        reason="rq cron came in RQ 2.4",
    ),
]


def wait_for_jobs(queue: Queue, count: int) -> list[str]:
    """Return the ids of the jobs on ``queue`` once there are ``count``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        job_ids = queue.get_job_ids()
        if len(job_ids) >= count:
            return job_ids
        time.sleep(0.1)
    raise AssertionError(f"{queue.name} had fewer than {count} jobs after {WAIT} s")


def test_cron_jobs_link_to_sends(
    rq_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """Runs of cron jobs link to the scheduler process's send spans."""
    env = worker_env(receiver)
    env["TEST_CRON_QUEUE"] = queue.name
    command = [
        sys.executable, "-m", "rq.cli", "cron", "-u", rq_url,
        "--logging-level", "WARNING", "tests.rq.cron_config",
    ]  # fmt: skip
    scheduler = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        job_ids = set(wait_for_jobs(queue, 2))
    finally:
        stop(scheduler)
    assert scheduler.returncode == 0
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, job_ids)
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in by_name(receiver.spans(), "send tests.rq.jobs.add")
    }
    assert set(sends) >= job_ids
    for job_id in job_ids:
        (run,) = runs[job_id]
        send = sends[job_id]
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert link_pairs(run) == [(send.trace_id, send.span_id)]
        assert send.parent_span_id is None
        # The scheduler process runs no jobs, so it counts as web.
        assert send.resource["jobtrace.component"] == "web"
        assert run.resource["jobtrace.component"] == "worker"
