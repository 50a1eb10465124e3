"""A forking worker whose collector is down runs its jobs at normal speed.

The work horses hand their spans to the worker, and only the worker's
batch processor waits for the collector, so no job waits for an export.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rq import Queue

from . import jobs
from .workers import rq_worker, wait_for_exit

pytestmark = pytest.mark.integration

JOBS = 20
FLUSH_TIMEOUT = 1.0


class _Endpoint:
    """Stands in for a receiver: only the endpoint the worker exports to."""

    def __init__(self, port: int) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"


@contextmanager
def _closed_port() -> Iterator[_Endpoint]:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    yield _Endpoint(port)


@contextmanager
def _silent_collector() -> Iterator[_Endpoint]:
    # The kernel completes connections to a listening socket, and nothing
    # ever reads the request or sends a response.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield _Endpoint(server.getsockname()[1])


def _burst_seconds(
    rq_url: str, queue: Queue, endpoint: _Endpoint, env: dict[str, str]
) -> tuple[float, float]:
    """Run a burst worker on JOBS jobs; return the drain time and exit time."""
    for i in range(JOBS):
        queue.enqueue(jobs.add, i, i)
    started = time.monotonic()
    with rq_worker(
        endpoint,  # type: ignore[arg-type]
        rq_url,
        queue.name,
        "--burst",
        env=env,
    ) as worker:
        while queue.count:
            assert time.monotonic() - started < 60, "the worker did not drain"
            time.sleep(0.01)
        drained = time.monotonic()
        assert wait_for_exit(worker) == 0
    return drained - started, time.monotonic() - drained


@pytest.mark.parametrize("collector", [_closed_port, _silent_collector])
def test_collector_down_adds_no_job_delay(
    rq_url: str, queue: Queue, collector: type
) -> None:
    """Jobs run as fast as without jobtrace, and the exit wait is bounded."""
    with _closed_port() as unused:
        baseline, _ = _burst_seconds(
            rq_url, queue, unused, {"JOBTRACE_ENABLED": "false"}
        )
    with collector() as endpoint:
        drain, exit_wait = _burst_seconds(
            rq_url,
            queue,
            endpoint,
            {"JOBTRACE_FLUSH_TIMEOUT": str(FLUSH_TIMEOUT)},
        )

    # A horse that waited for the collector would add at least the 0.5 s
    # degraded flush limit per job, 10 s over JOBS jobs. The margin absorbs
    # a busy machine's noise, which is far smaller.
    assert drain < 2 * baseline + 1.0
    # The worker's exit waits for the collector at most twice: once when
    # work() returns and once at exit, where the first failure has cut the
    # limit to jobtrace's degraded flush time.
    assert exit_wait < 2 * FLUSH_TIMEOUT + 1.5
    assert queue.count == 0
