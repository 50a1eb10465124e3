"""Start ``rq worker`` subprocesses that export to a test's OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from rq.job import Job

from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from tests import tracing

ROOT = Path(__file__).parents[2]
SERVICE_NAME = "jobtrace-rq-it"
WAIT = 60

#: Worker classes by test parameter; see worker_classes.py for why these
#: subclasses leave out RQ's command listener or shorten its poll.
WORKER_CLASSES = {
    "forking": "tests.rq.worker_classes.ForkingWorker",
    "simple": "tests.rq.worker_classes.InProcessWorker",
    "spawn": "tests.rq.worker_settings.SpawningWorker",
    "listening": "tests.rq.worker_classes.ListeningWorker",
}


def worker_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Environment of a worker subprocess: the OTLP endpoint and limits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_BSP_SCHEDULE_DELAY="100",
        JOBTRACE_FLUSH_TIMEOUT="5",
    )
    env.pop("JOBTRACE_COMPONENT", None)
    env.pop("JOBTRACE_ENABLED", None)
    return env


@contextmanager
def rq_worker(
    receiver: OtlpReceiver,
    url: str,
    queue: str,
    *options: str,
    worker_class: str = "forking",
    env: dict[str, str] | None = None,
    launcher: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``rq worker`` on ``queue``; yield the process.

    ``launcher`` is a command that wraps the worker's, such as
    ``opentelemetry-instrument``. On exit a worker still running gets one
    SIGTERM (warm shutdown) and must stop within 60 seconds.
    """
    command = [
        *launcher, sys.executable, "-m", "rq.cli", "worker",
        "-u", url, "-c", "tests.rq.worker_settings",
        "-w", WORKER_CLASSES[worker_class],
        "--logging_level", "WARNING", *options, queue,
    ]  # fmt: skip
    # Short options, because opentelemetry-instrument would read a long one
    # such as --config as an abbreviation of its own --configurator.
    full_env = worker_env(receiver)
    full_env.update(env or {})
    process = subprocess.Popen(command, env=full_env, cwd=ROOT)
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Warm-stop a worker, killing it if it has not exited in 60 seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired as timed_out:
        process.kill()
        process.wait()
        raise AssertionError("worker did not stop within 60 s") from timed_out


def wait_for_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait for a burst worker to finish its queue and exit."""
    return process.wait(timeout=WAIT)


def wait_for_saved_pid(job: Job) -> int:
    """Return the pid that ``jobs.save_pid_then_sleep`` saved in the job's meta."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        pid = job.get_meta(refresh=True).get("pid")
        if isinstance(pid, int):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"job {job.id} saved no pid within {WAIT} s")


def traced_producer(
    receiver: OtlpReceiver,
) -> AbstractContextManager[TracerProvider]:
    """Export this process's spans to ``receiver`` as component ``web``."""
    return tracing.traced_producer(receiver, SERVICE_NAME)


def process_spans_for(
    receiver: OtlpReceiver, ids: set[str], count: int = 1, timeout: float = WAIT
) -> dict[str, list[ReceivedSpan]]:
    """Wait for ``count`` process spans of every job id; group them by id."""

    def grouped(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
        found: dict[str, list[ReceivedSpan]] = {}
        for span in spans:
            job_id = span.attributes.get("messaging.message.id")
            if span.name.startswith("process ") and job_id in ids:
                found.setdefault(str(job_id), []).append(span)
        return found

    def arrived(spans: list[ReceivedSpan]) -> bool:
        found = grouped(spans)
        return all(len(found.get(job_id, [])) >= count for job_id in ids)

    return grouped(receiver.wait_for(arrived, timeout=timeout))


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    """Return the spans called ``name``."""
    return [span for span in spans if span.name == name]


def link_pairs(span: ReceivedSpan) -> list[tuple[str, str]]:
    """Return the (trace id, span id) pairs that ``span`` links to."""
    return [(trace_id, span_id) for trace_id, span_id, _ in span.links]
