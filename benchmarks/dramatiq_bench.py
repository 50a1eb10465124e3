"""The Dramatiq part of the benchmark: real ``dramatiq`` worker processes on Redis.

Each worker round enqueues a start marker, the no-op jobs and an end
marker with an uninstrumented broker, and only then starts ``dramatiq``
with 1 worker process of 1 thread. The markers record the time and the CPU
time of the command's process tree in Redis (see
:mod:`benchmarks.dramatiq_app`), so start-up and shutdown stay out of the
figures. Every round uses a fresh queue name, which is also the broker's
key namespace, and deletes its keys.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from benchmarks import _process
from benchmarks._samples import ProducerSample, WorkerSample
from benchmarks._sink import CONSUMER_SPANS, PRODUCER_SPANS, TRANSACTIONS, TelemetrySink

HOST = "dramatiq"
SETUP_LABELS = {
    "none": "uninstrumented",
    "jobtrace": "jobtrace",
    "sentry": "sentry-sdk",
}
WORKER_LABELS = {"single": "1 process, 1 thread"}
#: Dramatiq's worker processes run every message themselves.
FORKING_WORKERS: dict[str, str] = {}
#: The share of a round's jobs that the worker drains. With 1 thread,
#: Dramatiq's Redis consumer prefetches 2 messages and, while both are
#: unacknowledged, sleeps 5 to 10 ms before it fetches again. In a quick
#: run on a 2-core machine the uninstrumented worker ran 249 jobs/s, under
#: a third of Celery's solo pool.
JOBS_SHARE = {"single": 0.5}

#: The sink's count that grows by one per message run, for each
#: instrumented setup.
_SENT_PER_JOB = {"jobtrace": CONSUMER_SPANS, "sentry": TRANSACTIONS}
#: The same per enqueue. sentry-sdk only adds its trace headers to a
#: message sent outside a transaction.
_SENT_PER_ENQUEUE = {"jobtrace": PRODUCER_SPANS}
#: The start marker's run, which ends before the end marker's flush and so
#: is delivered with the jobs. The end marker's own run ends after it.
MARKER_RUNS = 1

#: Seconds a worker gets from its start to its first job.
STARTUP_TIMEOUT = 60.0
#: Seconds per job that a worker may take at most, on top of a fixed 30 s.
SECONDS_PER_JOB_LIMIT = 0.02
#: Seconds to wait for telemetry that a flush has already sent.
DELIVERY_TIMEOUT = 3.0


def run_worker(
    worker: str,
    setup: str,
    jobs: int,
    round_number: int,
    sink: TelemetrySink,
    redis_url: str,
) -> WorkerSample:
    """Drain ``jobs`` no-op jobs with one worker and return its measurements."""
    queue = f"bench-{uuid.uuid4().hex[:12]}"
    store = redis.Redis.from_url(redis_url)
    start_key, end_key = f"{queue}:start", f"{queue}:end"
    command = [
        sys.executable, "-m", "dramatiq", "benchmarks.dramatiq_app",
        "--processes", "1", "--threads", "1", "--queues", queue,
    ]  # fmt: skip
    log = Path(tempfile.gettempdir()) / f"jobtrace-{queue}.log"
    description = f"dramatiq worker with setup {setup}"
    try:
        _enqueue_round(redis_url, queue, jobs, start_key, end_key)
        sink.reset()
        env = _environment(setup, queue, sink, redis_url)
        with _process.running(command, env, log) as process:
            start = _process.wait_for(
                lambda: _marker(store, start_key),
                process,
                timeout=STARTUP_TIMEOUT,
                description=f"{description}: waiting for its first job",
                log=log,
            )
            end = _process.wait_for(
                lambda: _marker(store, end_key),
                process,
                timeout=30 + jobs * SECONDS_PER_JOB_LIMIT,
                description=f"{description}: waiting for its last job",
                log=log,
                interval=0.05,
            )
            delivered = _delivered(sink, _SENT_PER_JOB.get(setup), jobs + MARKER_RUNS)
    finally:
        _delete_keys(store, queue)
        store.close()
    log.unlink(missing_ok=True)
    return WorkerSample(
        host=HOST,
        worker=worker,
        setup=setup,
        round=round_number,
        jobs=jobs,
        seconds=end["time"] - start["time"],
        cpu_seconds=end["cpu"] - start["cpu"],
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
    queue = f"bench-{uuid.uuid4().hex[:12]}"
    store = redis.Redis.from_url(redis_url)
    command = [
        sys.executable, "-m", "benchmarks.dramatiq_producer",
        "--calls", str(calls), "--warmup", str(warmup),
    ]  # fmt: skip
    timeout = 60 + (calls + warmup) * SECONDS_PER_JOB_LIMIT
    try:
        sink.reset()
        result = _process.run_json(
            command, _environment(setup, queue, sink, redis_url), timeout
        )
        delivered = _delivered(sink, _SENT_PER_ENQUEUE.get(setup), calls + warmup)
    finally:
        _delete_keys(store, queue)
        store.close()
    return ProducerSample(
        host=HOST,
        setup=setup,
        round=round_number,
        calls=calls,
        wall_seconds=result["wall"],
        cpu_seconds=result["cpu"],
        delivered=delivered,
    )


def unavailable_setups(
    setups: Sequence[str], sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    """Return no setups: a Dramatiq setup that fails is an error, not a gap."""
    return {}


def _environment(
    setup: str, queue: str, sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    # Settings from the caller's shell must not change what is measured,
    # Dramatiq's prefetch variables among them.
    ignored = ("OTEL_", "SENTRY_", "JOBTRACE_", "BENCH_", "dramatiq_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ignored)}
    env.update(
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(_process.ROOT), env.get("PYTHONPATH")])
        ),
        BENCH_SETUP=setup,
        BENCH_BROKER_URL=redis_url,
        BENCH_QUEUE=queue,
        BENCH_SENTRY_DSN=sink.sentry_dsn(),
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.otlp_endpoint,
        OTEL_SERVICE_NAME="jobtrace-bench",
    )
    return env


def _enqueue_round(
    redis_url: str, queue: str, jobs: int, start_key: str, end_key: str
) -> None:
    # A broker without middleware, so that nothing traces these enqueues.
    broker = RedisBroker(url=redis_url, namespace=queue, middleware=[])
    try:
        broker.enqueue(_message(queue, "start_marker", start_key))
        for _ in range(jobs):
            broker.enqueue(_message(queue, "noop"))
        broker.enqueue(_message(queue, "end_marker", end_key))
    finally:
        broker.close()


def _message(queue: str, actor: str, *args: str) -> Message[None]:
    return Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={})


def _marker(store: redis.Redis, key: str) -> dict[str, float] | None:
    raw = store.get(key)
    return None if raw is None else dict(json.loads(raw))


def _delivered(sink: TelemetrySink, kind: str | None, expected: int) -> float | None:
    if kind is None:
        return None
    received = sink.wait_for(kind, expected, DELIVERY_TIMEOUT)
    return min(received, expected) / expected


def _delete_keys(store: redis.Redis, queue: str) -> None:
    # The broker's keys (the queue, its message hash, acks and heartbeats)
    # all start with the namespace, and the marker keys with the queue name.
    keys = list(store.scan_iter(match=f"{queue}*", count=1000))
    if keys:
        store.delete(*keys)
