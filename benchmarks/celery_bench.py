"""The Celery part of the benchmark: real ``celery worker`` processes on Redis.

Each worker round enqueues a start marker, the no-op jobs and an end
marker with an uninstrumented producer, and only then starts the worker.
The markers record the time and the worker's CPU time in Redis (see
:mod:`benchmarks.celery_app`), so worker start-up and shutdown stay out of
the figures. Every round uses fresh queue names and deletes its keys.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import redis
from celery import Celery

from benchmarks import _rounds
from benchmarks._samples import ProducerSample, WorkerSample
from benchmarks._sink import SPANS, TRANSACTIONS, TelemetrySink

HOST = "celery"
SETUP_LABELS = {
    "none": "uninstrumented",
    "jobtrace": "jobtrace",
    "otel": "opentelemetry-instrumentation-celery",
    "sentry": "sentry-sdk",
}
WORKER_OPTIONS = {
    "prefork": ("--pool", "prefork", "--concurrency", "1"),
    "solo": ("--pool", "solo"),
}
WORKER_LABELS = {"prefork": "prefork, concurrency 1", "solo": "solo"}
#: No Celery pool forks a process per job, and every worker drains all of
#: a round's jobs.
FORKING_WORKERS: dict[str, str] = {}
JOBS_SHARE: dict[str, float] = {}
#: The sink's count that grows by one per job, for each instrumented setup.
_SENT_PER_JOB = {"jobtrace": SPANS, "otel": SPANS, "sentry": TRANSACTIONS}
#: The same per enqueue. sentry-sdk sends nothing for an enqueue made
#: outside a transaction.
_SENT_PER_ENQUEUE = {"jobtrace": SPANS, "otel": SPANS}

#: Seconds per job that a worker may take at most, on top of a fixed 30 s.
SECONDS_PER_JOB_LIMIT = 0.02
#: kombu's Redis transport defaults for its unacknowledged-message keys.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"


def run_worker(
    worker: str,
    setup: str,
    jobs: int,
    round_number: int,
    sink: TelemetrySink,
    redis_url: str,
) -> WorkerSample:
    """Drain ``jobs`` no-op jobs with one worker and return its measurements."""
    queue = _rounds.new_queue()
    store = redis.Redis.from_url(redis_url)
    command = [
        sys.executable, "-m", "celery", "--app", "benchmarks.celery_app", "worker",
        *WORKER_OPTIONS[worker], "--queues", queue, "--hostname", f"{queue}@%h",
        "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    try:
        _enqueue_round(redis_url, queue, jobs)
        sink.reset()
        with _rounds.drained(
            command,
            _rounds.environment(setup, queue, sink, redis_url),
            store,
            queue,
            timeout=30 + jobs * SECONDS_PER_JOB_LIMIT,
            description=f"celery {worker} worker with setup {setup}",
        ) as measured:
            delivered = _rounds.delivered(sink, _SENT_PER_JOB.get(setup), jobs)
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
        "benchmarks.celery_producer",
        setup,
        calls,
        warmup,
        round_number,
        sink,
        redis_url,
        environment=_rounds.environment,
        delete_keys=_delete_keys,
        sent=_SENT_PER_ENQUEUE.get(setup),
        seconds_per_call=SECONDS_PER_JOB_LIMIT,
    )


def unavailable_setups(
    setups: Sequence[str], sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    """Return no setups: a Celery setup that fails is an error, not a gap."""
    return {}


def _enqueue_round(redis_url: str, queue: str, jobs: int) -> None:
    start_key, end_key = _rounds.marker_keys(queue)
    app = Celery("bench-enqueue", broker=redis_url)
    try:
        with app.producer_or_acquire() as producer:
            send = app.send_task
            send("bench.start_marker", (start_key,), queue=queue, producer=producer)
            for _ in range(jobs):
                send("bench.noop", queue=queue, producer=producer)
            send("bench.end_marker", (end_key,), queue=queue, producer=producer)
    finally:
        app.close()


def _delete_keys(store: redis.Redis, queue: str) -> None:
    # The queue's list, kombu's binding set and the two marker keys.
    keys = list(store.scan_iter(match=f"*{queue}*", count=1000))
    if keys:
        store.delete(*keys)

    # kombu's Redis transport keeps each delivered message in these two keys
    # until its ack, and a later worker would put it back on its queue. A
    # worker killed just after the end marker can leave that marker there.
    for tag, payload in store.hscan_iter(UNACKED_KEY, count=1000):
        if queue.encode() in payload:
            store.hdel(UNACKED_KEY, tag)
            store.zrem(UNACKED_INDEX_KEY, tag)
