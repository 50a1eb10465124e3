"""The RQ part of the benchmark: real ``rq worker --burst`` processes on Redis.

Each worker round enqueues a start marker, the no-op jobs and an end
marker with an uninstrumented producer, and only then starts a burst
worker, which exits once the queue is empty. The markers record the time
and the CPU time of the worker's process tree in Redis (see
:mod:`benchmarks.rq_app`), so worker start-up and shutdown stay out of the
figures. Every round uses fresh queue and job names and deletes its keys.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import redis
from rq import Queue
from rq.worker import Worker

from benchmarks import _process, _rounds
from benchmarks._samples import ProducerSample, WorkerSample
from benchmarks._sink import (
    CONSUMER_SPANS,
    PRODUCER_SPANS,
    TRANSACTIONS,
    TelemetrySink,
)

HOST = "rq"
SETUP_LABELS = {
    "none": "uninstrumented",
    "jobtrace": "jobtrace",
    "otel": "opentelemetry-instrumentation-rq",
    "sentry": "sentry-sdk",
}
WORKER_CLASSES = {
    "forking": "benchmarks.rq_app.ForkingWorker",
    "simple": "benchmarks.rq_app.InProcessWorker",
}
WORKER_LABELS = {"forking": "Worker (forking)", "simple": "SimpleWorker"}
#: Workers that fork a work horse per job, each mapped to the worker that
#: runs jobs in its own process, which the report compares it with.
FORKING_WORKERS = {"forking": "simple"}
#: The share of a round's jobs that each worker drains, so that a round
#: takes seconds, not minutes. In quick runs on a busy 2-core machine, RQ
#: 3.0's SimpleWorker ran about 4 times fewer jobs per second than Celery's
#: solo pool, and its forking Worker 13 times fewer (25 with jobtrace).
JOBS_SHARE = {"forking": 0.1, "simple": 0.5}
#: Setups that may fail to install or to instrument the installed RQ. The
#: report then shows the reason instead of figures, while a failure of any
#: other setup is an error.
ALTERNATIVES = ("otel", "sentry")

_APP = "benchmarks.rq_app"
#: The sink's count that grows by one per job run, for each instrumented
#: setup. opentelemetry-instrumentation-rq 0.1.4 records further spans of
#: kind CLIENT per job, around ``Job.perform`` and ``handle_job_success``.
#: NOTE: it wraps ``Worker.perform_job``, which SimpleWorker no longer
#: inherits from RQ 2.7 on, so there its jobs get no CONSUMER span and
#: read as 0% delivered.
_SENT_PER_JOB = {
    "jobtrace": CONSUMER_SPANS,
    "otel": CONSUMER_SPANS,
    "sentry": TRANSACTIONS,
}
#: The same per enqueue. sentry-sdk sends nothing for an enqueue made
#: outside a transaction.
_SENT_PER_ENQUEUE = {"jobtrace": PRODUCER_SPANS, "otel": PRODUCER_SPANS}
#: The start and end marker jobs, which every setup traces as well.
MARKER_JOBS = 2

#: Seconds per job that a worker may take at most, on top of a fixed 30 s.
SECONDS_PER_JOB_LIMIT = {"forking": 0.2, "simple": 0.02}
#: Seconds a burst worker gets to exit after its last job.
EXIT_TIMEOUT = 30.0
#: Seconds that importing a setup may take when checking that it works.
PROBE_TIMEOUT = 60.0


def run_worker(
    worker: str,
    setup: str,
    jobs: int,
    round_number: int,
    sink: TelemetrySink,
    redis_url: str,
) -> WorkerSample:
    """Drain ``jobs`` no-op jobs with one worker and return its measurements.

    ``delivered`` counts the two marker jobs as well, because the sink
    does not tell jobs apart, and it is measured after the burst worker
    has exited, so telemetry that a setup sends at exit counts too.
    """
    queue = _rounds.new_queue()
    store = redis.Redis.from_url(redis_url)
    command = [
        sys.executable, "-m", "rq.cli", "worker", "--burst",
        "-u", redis_url, "-c", _APP, "-w", WORKER_CLASSES[worker],
        "-n", queue, "--logging_level", "WARNING", queue,
    ]  # fmt: skip
    description = f"rq {worker} worker with setup {setup}"
    try:
        _enqueue_round(store, queue, jobs)
        sink.reset()
        with _rounds.drained(
            command,
            _environment(setup, queue, sink, redis_url),
            store,
            queue,
            timeout=30 + jobs * SECONDS_PER_JOB_LIMIT[worker],
            description=description,
        ) as measured:
            _wait_for_exit(
                measured.process, f"{description}: waiting for its exit", measured.log
            )
            delivered = _rounds.delivered(
                sink, _SENT_PER_JOB.get(setup), jobs + MARKER_JOBS
            )
    finally:
        _delete_keys(store, queue)
        store.close()
    return WorkerSample(
        host=HOST,
        worker=worker,
        setup=setup,
        round=round_number,
        jobs=jobs,
        seconds=measured.seconds,
        cpu_seconds=measured.cpu_seconds,
        delivered=delivered,
    )


def run_producer(
    setup: str,
    calls: int,
    warmup: int,
    round_number: int,
    sink: TelemetrySink,
    redis_url: str,
) -> ProducerSample:
    """Time ``calls`` enqueues in a fresh process after ``warmup`` untimed ones.

    ``delivered`` is the share of enqueues whose send span reached ``sink``.
    It is None for the uninstrumented setup and for sentry-sdk, which
    records no span for an enqueue made outside a transaction.
    """
    return _rounds.run_producer(
        HOST,
        "benchmarks.rq_producer",
        setup,
        calls,
        warmup,
        round_number,
        sink,
        redis_url,
        environment=_environment,
        delete_keys=_delete_keys,
        sent=_SENT_PER_ENQUEUE.get(setup),
        seconds_per_call=SECONDS_PER_JOB_LIMIT["simple"],
    )


def unavailable_setups(
    setups: Sequence[str], sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    """Import :mod:`benchmarks.rq_app` with each alternative setup.

    Returns the setups whose import failed, each with the reason to show
    in the report: "not installable" when its package is missing, "not
    usable" when setting it up raised.
    """
    failed = {}
    for setup in (s for s in setups if s in ALTERNATIVES):
        env = _environment(setup, "bench-probe", sink, redis_url)
        try:
            result = subprocess.run(
                [sys.executable, "-c", f"import {_APP}"],
                env=env,
                cwd=_process.ROOT,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=PROBE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise _process.BenchmarkError(
                f"importing {_APP} with setup {setup}: timed out after "
                f"{PROBE_TIMEOUT:.0f} s"
            ) from error
        if result.returncode != 0:
            failed[setup] = _failure_reason(result.stderr.decode(errors="replace"))
    return failed


def _failure_reason(errors: str) -> str:
    lines = errors.strip().splitlines()
    last = lines[-1].strip() if lines else "the import failed without a message"
    # wrapt ends its message with the repr of the module it patched, which
    # names a local path.
    last = last.split(" on <module ", 1)[0]
    name, separator, message = last.partition(": ")
    kind = "not installable" if name == "ModuleNotFoundError" else "not usable"
    return f"{kind}: {name.rsplit('.', 1)[-1]}{separator}{message}"


def _environment(
    setup: str, queue: str, sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    return _rounds.environment(setup, queue, sink, redis_url, ignored=("RQ_",))


def _enqueue_round(store: redis.Redis, queue: str, jobs: int) -> None:
    # Job ids that contain the queue's name let _delete_keys find the jobs'
    # keys after the round.
    start_key, end_key = _rounds.marker_keys(queue)
    target = Queue(queue, connection=store)
    target.enqueue(f"{_APP}.start_marker", start_key, job_id=f"{queue}-start")
    target.enqueue_many(
        [
            Queue.prepare_data(f"{_APP}.noop", job_id=f"{queue}-{number}")
            for number in range(jobs)
        ]
    )
    target.enqueue(f"{_APP}.end_marker", end_key, job_id=f"{queue}-end")


def _wait_for_exit(
    process: subprocess.Popen[bytes], description: str, log: Path
) -> None:
    try:
        code = process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        raise _process.BenchmarkError(
            f"{description}: timed out after {EXIT_TIMEOUT:.0f} s\n{_process.tail(log)}"
        ) from error
    if code != 0:
        raise _process.BenchmarkError(
            f"{description}: exit code {code}\n{_process.tail(log)}"
        )


def _delete_keys(store: redis.Redis, queue: str) -> None:
    # The jobs still queued (a producer's), then every key that names the
    # queue: the marker keys, the registries, the round's job and result
    # keys and the worker's own keys.
    Queue(queue, connection=store).delete(delete_jobs=True)
    keys = list(store.scan_iter(match=f"*{queue}*", count=1000))
    if keys:
        store.delete(*keys)
    store.srem(
        Worker.redis_workers_keys, f"{Worker.redis_worker_namespace_prefix}{queue}"
    )
