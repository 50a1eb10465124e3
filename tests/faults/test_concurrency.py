"""A thousand interleaved jobs on concurrent pools keep their spans apart.

The pools are Celery's threads, gevent and eventlet pools, and a Dramatiq
worker process with 8 threads.

Each job opens two nested spans around sleeps, so the pool switches to
other jobs while they are open. Half the jobs carry a trace context and
run in ``child`` mode under it, the other half carry none. Every process
span must contain exactly its own job's spans, a job with context must
join that trace, and a job without context must start a trace of its own.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from jobtrace._receiver import OtlpReceiver, ReceivedSpan

from .hosts import CeleryHost, DramatiqHost

pytestmark = pytest.mark.integration

JOBS = 1000
POOLS = {
    "threads": ("--pool", "threads", "--concurrency", "8"),
    "gevent": ("--pool", "gevent", "--concurrency", "50"),
    "eventlet": ("--pool", "eventlet", "--concurrency", "50"),
}
ENV = {"JOBTRACE_PROPAGATION": "child", "OTEL_BSP_MAX_QUEUE_SIZE": "20000"}


def _traceparent(rng: random.Random) -> tuple[str, str, str]:
    trace_id = f"{rng.getrandbits(128):032x}"
    span_id = f"{rng.getrandbits(64):016x}"
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@pytest.mark.parametrize("pool", list(POOLS))
def test_interleaved_jobs_keep_context(
    pool: str, redis_url: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Each process span contains exactly its own job's two spans."""
    pytest.importorskip(pool if pool != "threads" else "threading")
    host = CeleryHost(redis_url)
    host.options = POOLS[pool]
    rng = random.Random(pool)
    sent: dict[str, tuple[str, str] | None] = {}
    with host.worker(receiver, tmp_path / "worker.log", ENV) as worker:
        for number in range(JOBS):
            if number % 2:
                header, trace_id, span_id = _traceparent(rng)
                result = host.app.send_task(
                    "it.nested", headers={"traceparent": header}
                )
                sent[result.id] = (trace_id, span_id)
            else:
                sent[host.app.send_task("it.nested").id] = None
        spans = receiver.wait_for(
            lambda found: sum(s.name == "inner" for s in found) >= JOBS, timeout=120
        )
        worker.stop()

    _check_context(sent, spans, "process it.nested")


def test_dramatiq_threads_keep_context(
    redis_url: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Each process span of a Dramatiq thread contains only its own spans."""
    host = DramatiqHost(redis_url)
    host.threads = 8
    rng = random.Random("dramatiq")
    sent: dict[str, tuple[str, str] | None] = {}
    with host.worker(receiver, tmp_path / "worker.log", ENV) as worker:
        for number in range(JOBS):
            if number % 2:
                header, trace_id, span_id = _traceparent(rng)
                # A producer without jobtrace that writes the option itself.
                message = host.actors.nested.send_with_options(
                    jobtrace={"traceparent": header}
                )
                sent[message.message_id] = (trace_id, span_id)
            else:
                sent[host.actors.nested.send().message_id] = None
        spans = receiver.wait_for(
            lambda found: sum(s.name == "inner" for s in found) >= JOBS, timeout=120
        )
        worker.stop()

    threads = {
        span.attributes["test.thread"]
        for span in spans
        if span.name == "process nested"
    }
    assert len(threads) == host.threads
    _check_context(sent, spans, "process nested")


def _check_context(
    sent: dict[str, tuple[str, str] | None], spans: list[ReceivedSpan], name: str
) -> None:
    runs = {
        str(span.attributes["messaging.message.id"]): span
        for span in spans
        if span.name == name
    }
    children: dict[str, list[ReceivedSpan]] = collections.defaultdict(list)
    for span in spans:
        if span.name in ("outer", "inner"):
            children[str(span.attributes["test.job_id"])].append(span)
    root_traces = [run.trace_id for job, run in runs.items() if sent[job] is None]

    assert set(runs) == set(sent)
    assert len(set(root_traces)) == len(root_traces)
    for job_id, context in sent.items():
        run = runs[job_id]
        outer, inner = sorted(children[job_id], key=lambda s: s.name != "outer")
        assert outer.parent_span_id == run.span_id, job_id
        assert inner.parent_span_id == outer.span_id, job_id
        assert {outer.trace_id, inner.trace_id} == {run.trace_id}, job_id
        if context is None:
            assert run.parent_span_id is None, job_id
        else:
            assert (run.trace_id, run.parent_span_id) == context, job_id
    by_parent = collections.Counter(
        s.parent_span_id for s in spans if s.name == "outer"
    )
    assert all(by_parent[run.span_id] == 1 for run in runs.values())
