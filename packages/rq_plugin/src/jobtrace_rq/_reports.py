"""Outcomes of runs, and runs reported by the worker instead of its horse.

The forking ``Worker``, and the ``SpawnWorker`` of RQ 3.x, run each job
in a work horse process. When the horse dies before it ends its own span
(SIGKILL, out of memory, killed by the monitor after ``job_timeout``,
stopped through RQ's stop-job command, or killed by a cold shutdown), the
worker that monitored it reports the job's process span, with the start
time it recorded and the context in the job's meta.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jobtrace
from jobtrace import Guard, Outcome
from jobtrace_rq._propagation import job_from_rq, read_carrier

# Start time of the horse run of each job that this process is monitoring.
_monitored: jobtrace.BoundedRegistry[str, float] = jobtrace.BoundedRegistry()
# Process spans of stopped jobs, opened before RQ runs the stopped callback
# in the worker and ended by handle_job_failure, which RQ calls after it.
_stopped: jobtrace.BoundedRegistry[str, jobtrace.RunHandle] = jobtrace.BoundedRegistry()
# The pipe that carries the spans of the horse this worker forked last.
_horse_pipe: jobtrace.SpanPipe | None = None


class WorkHorseLostError(Exception):
    """The work horse ended without reporting the job it was running."""


def argument(args: Any, kwargs: Any, index: int, name: str) -> Any:
    """Return a wrapped method's argument by position or keyword, or None."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def run_outcome(
    job: Any, finished: Any, error: BaseException | None, retried: bool
) -> Outcome:
    """Return the outcome of a run that ``perform_job`` has finished.

    ``finished`` is what ``perform_job`` returned, or None if it raised.
    ``retried`` is whether the job was enqueued again during the run.
    """
    from rq.exceptions import ShutDownImminentException
    from rq.job import JobStatus
    from rq.timeouts import JobTimeoutException

    if retried:
        return Outcome.RETRY
    if job.get_status(refresh=False) == JobStatus.STOPPED:
        return Outcome.INTERRUPTED
    if isinstance(error, JobTimeoutException):
        return Outcome.TIMEOUT
    # SystemExit and KeyboardInterrupt reach a job when the worker is told
    # to stop at once, and HerokuWorker raises ShutDownImminentException.
    interrupts = (ShutDownImminentException, SystemExit, KeyboardInterrupt)
    if isinstance(error, interrupts):
        return Outcome.INTERRUPTED
    failed = job.get_status(refresh=False) == JobStatus.FAILED
    if finished is not True or error is not None or failed:
        return Outcome.FAILURE
    return Outcome.SUCCESS


def watch_horse(pipe: jobtrace.SpanPipe) -> None:
    """Keep the span pipe of the horse that was just forked."""
    global _horse_pipe
    _horse_pipe = pipe


def _collect_horse_spans() -> list[Any]:
    global _horse_pipe
    pipe, _horse_pipe = _horse_pipe, None
    if pipe is None:
        return []
    return pipe.collect()


def wrapped_monitor_work_horse(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    job = argument(args, kwargs, 0, "job")
    with _MONITOR:
        _monitored.put(job.id, time.time())
    try:
        return wrapped(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt):
        # A cold shutdown kills the horse from the signal handler, which
        # then raises SystemExit here, in the middle of the wait.
        with _MONITOR:
            _report_interrupted_run(job)
        raise
    except Exception as error:
        # RQ 1.x and 2.x import a stopped job's callback before they run it,
        # so a callback that cannot be imported raises here. The stop-job
        # command has killed the horse by then.
        with _MONITOR:
            if getattr(instance, "_stopped_job_id", None) == job.id:
                _report_interrupted_run(job, error)
        raise
    finally:
        with _MONITOR:
            _monitored.pop(job.id)
            # RQ 1.x and 2.x skip handle_job_failure when the stopped
            # callback raises.
            _end_stopped_run(job, "stopped callback failed")
            # The horse has exited. Spans it left open belong to no job
            # that the worker reported, for example when the job's code
            # called os._exit itself.
            jobtrace.end_abandoned(_collect_horse_spans())


def wrapped_handle_job_failure(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    # The monitoring worker calls handle_job_failure only when the horse
    # exited without finishing the job. The horse and SimpleWorker call it
    # for ordinary failures, which perform_job's wrapper reports.
    with _LOST:
        _report_lost_run(instance, args, kwargs)
    return wrapped(*args, **kwargs)


def wrapped_stopped_callback(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    # In RQ 1.x and 2.x this wraps Job.execute_stopped_callback, so the job
    # is the instance. In RQ 3.0 it wraps a function that takes the job.
    job = instance if instance is not None else argument(args, kwargs, 0, "job")
    run = None
    with _LOST:
        run = _begin_stopped_run(job)
    try:
        return wrapped(*args, **kwargs)
    finally:
        if run is not None:
            with _LOST:
                run.detach()


def _begin_stopped_run(job: Any) -> jobtrace.RunHandle | None:
    started = _monitored.pop(job.id)
    if started is None:
        return None
    carrier = read_carrier(job)
    run = jobtrace.begin_report(
        job_from_rq(job, carrier),
        carrier,
        start_time=started,
        unfinished=_collect_horse_spans(),
        attach=True,
    )
    _stopped.put(job.id, run)
    return run


def _end_stopped_run(job: Any, message: str) -> bool:
    run = _stopped.pop(job.id)
    if run is None:
        return False
    jobtrace.end_run(run, Outcome.INTERRUPTED, WorkHorseLostError(message))
    return True


def _report_lost_run(worker: Any, args: Any, kwargs: Any) -> None:
    job = argument(args, kwargs, 0, "job")
    message = argument(args, kwargs, 3, "exc_string") or "work horse exited"
    if getattr(worker, "is_horse", False):
        return
    if _end_stopped_run(job, str(message).strip()):
        return
    started = _monitored.pop(job.id)
    if started is None:
        return
    outcome = _lost_outcome(worker, job, started)
    carrier = read_carrier(job)
    jobtrace.report_run(
        job_from_rq(job, carrier),
        carrier,
        outcome,
        WorkHorseLostError(str(message).strip()),
        start_time=started,
        unfinished=_collect_horse_spans(),
    )


def _report_interrupted_run(job: Any, error: BaseException | None = None) -> None:
    started = _monitored.pop(job.id)
    if started is None:
        return
    carrier = read_carrier(job)
    jobtrace.report_run(
        job_from_rq(job, carrier),
        carrier,
        Outcome.INTERRUPTED,
        error,
        start_time=started,
        unfinished=_collect_horse_spans(),
    )


def _lost_outcome(worker: Any, job: Any, started: float) -> Outcome:
    if getattr(worker, "_stopped_job_id", None) == job.id:
        return Outcome.INTERRUPTED
    # The monitor kills a horse that outlives job_timeout by 60 s. A horse
    # that died of anything else after its timeout is counted as timed out
    # as well, because the worker cannot tell the two apart.
    timeout = getattr(job, "timeout", None)
    elapsed = time.time() - started
    if isinstance(timeout, (int, float)) and 0 < timeout < elapsed:
        return Outcome.TIMEOUT
    return Outcome.KILLED


def stopped_callback_targets() -> list[tuple[Any, str, Any]]:
    """Return where the installed RQ runs a stopped job's callback.

    RQ 1.x and 2.x call ``Job.execute_stopped_callback``. RQ 3.0 calls the
    function ``execute_stopped_callback`` that the forking ``Worker``'s
    module imports from ``rq.callbacks``, so that module's name is wrapped.
    """
    from rq.job import Job
    from rq.worker import Worker

    if "execute_stopped_callback" in vars(Job):
        return [(Job, "execute_stopped_callback", wrapped_stopped_callback)]
    module = sys.modules[Worker.__module__]
    if callable(getattr(module, "execute_stopped_callback", None)):
        return [(module, "execute_stopped_callback", wrapped_stopped_callback)]
    return []


def clear() -> None:
    """Forget the monitored runs, the stopped runs and the horse's pipe."""
    global _horse_pipe
    _monitored.clear()
    _stopped.clear()
    _horse_pipe = None


_MONITOR = Guard("rq.Worker.monitor_work_horse")
_LOST = Guard("rq.handle_job_failure")
