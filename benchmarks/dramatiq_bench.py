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

import sys
from collections.abc import Sequence

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from benchmarks import _rounds
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

#: Seconds per job that a worker may take at most, on top of a fixed 30 s.
SECONDS_PER_JOB_LIMIT = 0.02


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
        sys.executable, "-m", "dramatiq", "benchmarks.dramatiq_app",
        "--processes", "1", "--threads", "1", "--queues", queue,
    ]  # fmt: skip
    try:
        _enqueue_round(redis_url, queue, jobs)
        sink.reset()
        with _rounds.drained(
            command,
            _environment(setup, queue, sink, redis_url),
            store,
            queue,
            timeout=30 + jobs * SECONDS_PER_JOB_LIMIT,
            description=f"dramatiq worker with setup {setup}",
        ) as measured:
            delivered = _rounds.delivered(
                sink, _SENT_PER_JOB.get(setup), jobs + MARKER_RUNS
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
        "benchmarks.dramatiq_producer",
        setup,
        calls,
        warmup,
        round_number,
        sink,
        redis_url,
        environment=_environment,
        delete_keys=_delete_keys,
        sent=_SENT_PER_ENQUEUE.get(setup),
        seconds_per_call=SECONDS_PER_JOB_LIMIT,
    )


def unavailable_setups(
    setups: Sequence[str], sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    """Return no setups: a Dramatiq setup that fails is an error, not a gap."""
    return {}


def _environment(
    setup: str, queue: str, sink: TelemetrySink, redis_url: str
) -> dict[str, str]:
    # Dramatiq's prefetch variables among the settings left out.
    return _rounds.environment(setup, queue, sink, redis_url, ignored=("dramatiq_",))


def _enqueue_round(redis_url: str, queue: str, jobs: int) -> None:
    start_key, end_key = _rounds.marker_keys(queue)
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


def _delete_keys(store: redis.Redis, queue: str) -> None:
    # The broker's keys (the queue, its message hash, acks and heartbeats)
    # all start with the namespace, and the marker keys with the queue name.
    keys = list(store.scan_iter(match=f"{queue}*", count=1000))
    if keys:
        store.delete(*keys)
