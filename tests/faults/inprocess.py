"""In-process workers of each host that run one fixed set of jobs.

:data:`RUNNERS` names the hosts, for ``pytest.mark.parametrize``.

The set contains a job that returns, one that raises ``ValueError("boom")``
and one that fails once and succeeds when retried. :meth:`run` returns
what a caller sees of each job (its value, or its exception's class and
arguments, and the number of runs), so that a run with jobtrace can be
compared with one without.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: What a caller saw of one job: ("value", value) or ("error", class name,
#: args), and the number of runs it took.
Seen = tuple[tuple[Any, ...], int]


class CeleryRunner:
    """A solo Celery worker thread on Redis, on a queue of its own."""

    name = "celery"

    def __init__(self, redis_url: str) -> None:
        from celery import Celery

        self.app = Celery("faults", broker=redis_url, backend=redis_url)
        self.app.conf.update(
            task_default_queue=f"jobtrace-faults-{uuid.uuid4().hex[:8]}",
            broker_connection_retry_on_startup=False,
        )

        @self.app.task(name="faults.add")
        def add(x: int, y: int) -> int:
            return x + y

        @self.app.task(name="faults.fail")
        def fail() -> None:
            raise ValueError("boom")

        @self.app.task(
            name="faults.flaky", bind=True, max_retries=2, default_retry_delay=0
        )
        def flaky(self: Any) -> int:
            if self.request.retries < 1:
                raise self.retry(exc=KeyError("again"), countdown=0)
            return int(self.request.retries) + 1

        @self.app.task(name="faults.echo")
        def echo(*args: Any, **kwargs: Any) -> str:
            return "echoed"

        self.tasks = (add, fail, flaky)
        self.echo = echo

    @contextmanager
    def started(self) -> Iterator[CeleryRunner]:
        """Run the worker thread for the duration of the block."""
        from celery.contrib.testing.worker import start_worker

        with start_worker(self.app, pool="solo", perform_ping_check=False):
            yield self

    def run_echo(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Run a job that takes any arguments; return its id."""
        result = self.echo.apply_async(args, kwargs)
        assert result.get(timeout=30) == "echoed"
        self.settle()
        return str(result.id)

    def settle(self) -> None:
        """Wait until the worker thread has finished its jobs' hooks.

        Celery stores a result before it sends task_postrun, so a caller
        can see the result while the job's span is still open.
        """
        from celery.worker import state

        deadline = time.monotonic() + 30
        while state.active_requests:
            assert time.monotonic() < deadline, "the worker did not go idle"
            time.sleep(0.01)

    def run(self) -> list[Seen]:
        add, fail, flaky = self.tasks
        results = [add.delay(2, 3), fail.delay(), flaky.delay()]
        seen: list[Seen] = []
        for result in results:
            value = result.get(timeout=30, propagate=False)
            runs = value if result.name == "faults.flaky" else 1
            if isinstance(value, BaseException):
                seen.append((("error", type(value).__name__, value.args), runs))
            else:
                seen.append((("value", value), runs))
        self.settle()
        return seen


class RQRunner:
    """RQ's SimpleWorker in burst mode, on a queue of its own."""

    name = "rq"

    def __init__(self, redis_url: str) -> None:
        from redis import Redis
        from rq import Queue

        self.queue = Queue(
            f"jobtrace-faults-{uuid.uuid4().hex[:8]}",
            connection=Redis.from_url(redis_url),
        )

    @contextmanager
    def started(self) -> Iterator[RQRunner]:
        """Delete the queue and its jobs after the block."""
        try:
            yield self
        finally:
            self.queue.delete(delete_jobs=True)

    def run_echo(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Run a job that takes any arguments; return its id."""
        from tests.rq import jobs

        job = self.queue.enqueue(jobs.echo, *args, **kwargs)
        self.work()
        assert job.return_value() == "echoed"
        return str(job.id)

    def work(self) -> None:
        """Run every job on the queue in this thread, then return."""
        from tests.rq.worker_classes import InProcessWorker

        InProcessWorker([self.queue], connection=self.queue.connection).work(
            burst=True, logging_level="ERROR"
        )

    def run(self) -> list[Seen]:
        from rq import Retry

        from tests.rq import jobs

        enqueued = [
            self.queue.enqueue(jobs.add, 2, 3),
            self.queue.enqueue(jobs.fail),
            self.queue.enqueue(jobs.fail_once, retry=Retry(max=1)),
        ]
        self.work()
        seen: list[Seen] = []
        for job in enqueued:
            job.refresh()
            runs = int(job.meta.get("runs", 1))
            if job.is_failed:
                last_line = (job.latest_result().exc_string or "").strip()
                seen.append((("error", last_line.splitlines()[-1]), runs))
            else:
                seen.append((("value", job.return_value()), runs))
        return seen


class DramatiqRunner:
    """A Dramatiq worker with two threads on a stub broker with results."""

    name = "dramatiq"

    def __init__(self, redis_url: str) -> None:
        import dramatiq
        from dramatiq.brokers.stub import StubBroker
        from dramatiq.middleware import CurrentMessage
        from dramatiq.results import Results
        from dramatiq.results.backends import StubBackend

        from tests.dramatiq.workers import default_middleware

        self.backend = StubBackend()
        self.broker = StubBroker(middleware=default_middleware())
        self.broker.add_middleware(CurrentMessage())
        self.broker.add_middleware(Results(backend=self.backend))
        self.broker.emit_after("process_boot")
        options = {"broker": self.broker, "store_results": True}

        @dramatiq.actor(max_retries=0, **options)
        def add(x: int, y: int) -> int:
            return x + y

        @dramatiq.actor(max_retries=0, **options)
        def fail() -> None:
            raise ValueError("boom")

        @dramatiq.actor(max_retries=2, min_backoff=10, max_backoff=20, **options)
        def flaky() -> int:
            message = CurrentMessage.get_current_message()
            retries = int(message.options.get("retries", 0)) if message else 0
            if retries < 1:
                raise KeyError("again")
            return retries + 1

        @dramatiq.actor(max_retries=0, **options)
        def echo(*args: Any, **kwargs: Any) -> str:
            return "echoed"

        self.actors = (add, fail, flaky, echo)

    @contextmanager
    def started(self) -> Iterator[DramatiqRunner]:
        """Make the stub broker the global one for the duration of the block.

        ``jobtrace_dramatiq.instrument()`` without a broker instruments the
        global broker.
        """
        import dramatiq

        previous = dramatiq.broker.global_broker
        dramatiq.set_broker(self.broker)
        try:
            yield self
        finally:
            self.broker.flush_all()
            self.broker.close()
            dramatiq.set_broker(previous)  # type: ignore[arg-type]

    def work(self) -> None:
        """Run every message on the broker, retries included, then return."""
        from dramatiq import Worker

        worker = Worker(self.broker, worker_timeout=50, worker_threads=2)
        worker.start()
        try:
            # Retries go through the worker's delay queue and back.
            for _ in range(3):
                for queue in self.broker.get_declared_queues():
                    self.broker.join(queue, fail_fast=False)
                worker.join()
        finally:
            worker.stop()

    def run_echo(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Run a job that takes any arguments; return its message id."""
        message = self.actors[3].send(*args, **kwargs)
        self.work()
        assert message.get_result(backend=self.backend) == "echoed"
        return str(message.message_id)

    def run(self) -> list[Seen]:
        from dramatiq.results import ResultFailure

        add, fail, flaky, _ = self.actors
        messages = [add.send(2, 3), fail.send(), flaky.send()]
        self.work()
        seen: list[Seen] = []
        for message in messages:
            try:
                value = message.get_result(backend=self.backend)
            except ResultFailure as failure:
                error = ("error", failure.orig_exc_type, failure.orig_exc_msg)
                seen.append((error, 1))
                continue
            runs = value if message.actor_name == "flaky" else 1
            seen.append((("value", value), runs))
        return seen


Runner = CeleryRunner | RQRunner | DramatiqRunner


def make_runner(name: str, redis_url: str) -> Runner:
    """Return the in-process runner of host ``name``."""
    if name == "celery":
        return CeleryRunner(redis_url)
    if name == "rq":
        return RQRunner(redis_url)
    if name == "dramatiq":
        return DramatiqRunner(redis_url)
    raise ValueError(f"unknown host {name!r}")


#: Hosts that have an in-process runner.
RUNNERS = ("celery", "rq", "dramatiq")
