"""Workers stopped while jobs run still deliver those jobs' spans.

A warm shutdown lets running jobs finish. A cold shutdown stops them, and
their process spans end with outcome ``interrupted`` within the flush
limit. Celery ignores a second SIGTERM, so its cold shutdown is SIGQUIT,
after a SIGTERM or alone. RQ ignores a second signal that comes within a
second of the first. Each case also runs on a worker that ``celery multi``
started as a daemon.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from jobtrace._receiver import OtlpReceiver, ReceivedSpan

from .hosts import Host

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

HOST_NAMES = ("celery", "celery-multi", "rq")
#: Dramatiq has a warm shutdown only: a second signal ends its worker
#: processes without a hook (docs/dramatiq.md, Limitations).
WARM_HOST_NAMES = (*HOST_NAMES, "dramatiq")
FLUSH_TIMEOUT = 2.0
ENV = {"JOBTRACE_FLUSH_TIMEOUT": str(FLUSH_TIMEOUT)}
#: Signals of a cold shutdown, by host, sent 1.2 s apart.
COLD_SIGNALS = {
    "celery": (signal.SIGTERM, signal.SIGQUIT),
    "celery-multi": (signal.SIGQUIT,),
    "rq": (signal.SIGTERM, signal.SIGTERM),
}
#: Slow jobs running at once, by host: Celery's pool has two children and
#: the Dramatiq worker process two threads.
RUNNING = {"celery": 2, "celery-multi": 2, "rq": 1, "dramatiq": 2}
#: Time beyond the flush limit that a host may take to stop. Celery's
#: prefork pool takes about 2 s to stop on a 2 vCPU VM, RQ under 1 s.
STOP_ALLOWANCE = 3.0


def _process_spans(receiver: OtlpReceiver, ids: set[str]) -> dict[str, ReceivedSpan]:
    def found() -> dict[str, ReceivedSpan]:
        return {
            str(span.attributes.get("messaging.message.id")): span
            for span in receiver.spans()
            if span.name.startswith("process ")
            and span.attributes.get("messaging.message.id") in ids
        }

    receiver.wait_for(lambda _: len(found()) == len(ids), timeout=10)
    return found()


@pytest.mark.parametrize("host_name", WARM_HOST_NAMES)
def test_warm_shutdown_finishes_jobs(
    host: Host, host_name: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """One SIGTERM lets the running jobs finish, and their spans arrive."""
    with host.worker(receiver, tmp_path / "worker.log", ENV) as worker:
        host.run_jobs(2)
        ids = host.start_slow_jobs(RUNNING[host_name], 1.5)
        time.sleep(0.8)
        worker.stop(signal.SIGTERM)
        finished = host.finished(ids)

    runs = _process_spans(receiver, set(ids))
    assert finished
    assert set(runs) == set(ids)
    for run in runs.values():
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.duration_s >= 1.5


@pytest.mark.parametrize("host_name", HOST_NAMES)
def test_cold_shutdown_interrupts_jobs(
    host: Host, host_name: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A cold shutdown ends the running job's span as interrupted, in bounds."""
    with host.worker(receiver, tmp_path / "worker.log", ENV) as worker:
        host.run_jobs(2)
        job_id = host.start_span_job()
        time.sleep(1.5)
        for number, sig in enumerate(COLD_SIGNALS[host_name]):
            if number:
                time.sleep(1.2)
            worker.send_signal(sig)
        took = worker.wait()
    log.info("%s: exited %.2f s after the last signal", host_name, took)

    run = _process_spans(receiver, {job_id})[job_id]
    (sleeping,) = [span for span in receiver.spans() if span.name == "sleeping"]
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.status_code == "ERROR"
    assert sleeping.parent_span_id == run.span_id
    assert sleeping.trace_id == run.trace_id
    assert took < FLUSH_TIMEOUT + STOP_ALLOWANCE


@pytest.mark.parametrize("host_name", ["celery-multi"])
def test_daemon_killed_child_reported(
    host: Host, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A child of a ``celery multi`` daemon killed mid-job is reported killed."""
    with host.worker(receiver, tmp_path / "worker.log", ENV) as worker:
        host.run_jobs(2)
        job_id = host.start_span_job()
        time.sleep(1.5)
        for child in worker.children():
            os.kill(child, signal.SIGKILL)
        run = _process_spans(receiver, {job_id})[job_id]
        worker.stop(signal.SIGTERM)

    (sleeping,) = [span for span in receiver.spans() if span.name == "sleeping"]
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert sleeping.parent_span_id == run.span_id
    assert sleeping.attributes["jobtrace.span.ended_by_parent"] is True
