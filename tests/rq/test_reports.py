"""The worker's report of a work horse that died, called without a fork.

The integration tests kill a real horse, stop one with the stop-job
command, and let one outlive ``job_timeout`` by a minute. These tests call
the wrappers of ``handle_job_failure``, ``monitor_work_horse`` and the
stopped callback as the monitoring worker would, for each outcome and for
a stopped callback that raises.
"""

from __future__ import annotations

import time
import types
from typing import Any

import pytest
from rq import Queue
from rq.job import Job

import jobtrace
from jobtrace_rq import _reports

from . import jobs


def report(job: Job, *, stopped: bool = False, is_horse: bool = False) -> None:
    """Call the wrapped handle_job_failure as a monitoring worker would."""
    worker = types.SimpleNamespace(
        is_horse=is_horse, _stopped_job_id=job.id if stopped else None
    )
    _reports.wrapped_handle_job_failure(
        lambda *args, **kwargs: None,
        worker,
        (job,),
        {"exc_string": "Work-horse terminated unexpectedly; waitpid returned 9"},
    )


@pytest.fixture
def job(instrumented: Any, queue: Queue) -> Job:
    """A job that a worker is monitoring, which started two seconds ago."""
    created = queue.enqueue(jobs.sleep, 30, job_timeout=60)
    _reports._monitored.put(created.id, time.time() - 2)
    return created


def test_stopped_job_is_interrupted(instrumented: Any, job: Job) -> None:
    """A horse ended by the stop-job command is reported as interrupted."""
    report(job, stopped=True)

    (run,) = [
        s for s in instrumented.get_finished_spans() if s.name.startswith("process")
    ]
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True


def test_overdue_horse_is_timeout(instrumented: Any, job: Job) -> None:
    """A horse that died after its job_timeout is reported as timeout."""
    job.timeout = 1
    report(job)

    (run,) = [
        s for s in instrumented.get_finished_spans() if s.name.startswith("process")
    ]
    assert run.attributes["jobtrace.job.outcome"] == "timeout"
    assert run.status.description.startswith("WorkHorseLostError: Work-horse")


def test_killed_horse_is_killed(instrumented: Any, job: Job) -> None:
    """A horse that died within its job_timeout is reported as killed."""
    report(job)

    (run,) = [
        s for s in instrumented.get_finished_spans() if s.name.startswith("process")
    ]
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.start_time < time.time_ns() - 1_900_000_000


def test_horse_failure_not_reported(instrumented: Any, job: Job) -> None:
    """handle_job_failure inside the horse reports nothing itself."""
    report(job, is_horse=True)

    names = [s.name for s in instrumented.get_finished_spans()]
    assert names == ["send tests.rq.jobs.sleep"]


def test_unmonitored_failure_not_reported(instrumented: Any, queue: Queue) -> None:
    """A failure outside a monitored horse run, as in SimpleWorker, is not reported."""
    unmonitored = queue.enqueue(jobs.fail)
    report(unmonitored)

    names = [s.name for s in instrumented.get_finished_spans()]
    assert names == ["send tests.rq.jobs.fail"]


def test_raising_stopped_callback_reported(instrumented: Any, job: Job) -> None:
    """A stopped callback that raises still ends the run, with the span current."""

    def callback(*args: Any, **kwargs: Any) -> None:
        with jobtrace.tracer().start_as_current_span("callback"):
            raise RuntimeError("callback failed")

    def monitor(*args: Any, **kwargs: Any) -> None:
        # RQ 1.x and 2.x let the callback's error out of monitor_work_horse,
        # so handle_job_failure never runs.
        _reports.wrapped_stopped_callback(callback, None, (job,), {})

    with pytest.raises(RuntimeError, match="callback failed"):
        _reports.wrapped_monitor_work_horse(monitor, None, (job,), {})

    spans = instrumented.get_finished_spans()
    (run,) = [s for s in spans if s.name.startswith("process")]
    (inside,) = [s for s in spans if s.name == "callback"]
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert inside.parent.span_id == run.context.span_id
    assert _reports._stopped.pop(job.id) is None
