"""Real worker processes of each host, driven the same way by the fault tests.

Each host class starts its worker as a subprocess that exports to a test's
OTLP receiver and writes its output to a log file, and runs batches of
jobs from this process. A fault test takes a host as a parameter, so a
new host joins every fault test by adding a class to :data:`HOSTS`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from jobtrace._receiver import OtlpReceiver
from tests.celery import workers as celery_workers
from tests.rq import workers as rq_workers

WAIT = 60


class Worker:
    """A running worker process and the log files it writes.

    ``process`` is None for a worker that detached itself, such as one
    that ``celery multi`` started, which this process cannot wait for.
    """

    def __init__(
        self,
        pid: int,
        log_paths: Callable[[], list[Path]],
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.pid = pid
        self.log_paths = log_paths
        self.process = process

    def log_text(self) -> str:
        """Return everything the worker wrote so far, in all its log files."""
        return "".join(path.read_text(errors="replace") for path in self.log_paths())

    def rss_bytes(self) -> int:
        """Return the resident memory of the worker and its child processes.

        The children count because Dramatiq's main process only supervises
        the worker processes that it forks.
        """
        total = 0
        for pid in (self.pid, *self.children()):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            rows = status.splitlines()
            line = next((row for row in rows if row.startswith("VmRSS:")), None)
            total += int(line.split()[1]) * 1024 if line else 0
        return total

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the worker's main process."""
        os.kill(self.pid, sig)

    def exited(self) -> bool:
        """Return whether the worker's main process has exited."""
        if self.process is not None:
            return self.process.poll() is not None
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    def wait(self, timeout: float = WAIT) -> float:
        """Wait until the worker exits; return the seconds that took."""
        started = time.monotonic()
        while not self.exited():
            assert time.monotonic() - started < timeout, f"{self.pid} still runs"
            time.sleep(0.01)
        return time.monotonic() - started

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """Send ``sig`` and return the seconds until the worker exited."""
        self.send_signal(sig)
        return self.wait()

    def pause(self) -> None:
        """Stop the worker and its children with SIGSTOP."""
        for pid in (self.pid, *self.children()):
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a worker that :meth:`pause` stopped."""
        for pid in (self.pid, *self.children()):
            os.kill(pid, signal.SIGCONT)

    def children(self) -> list[int]:
        """Return the pids of the worker's child processes."""
        path = f"/proc/{self.pid}/task/{self.pid}/children"
        with open(path) as listed:
            return [int(pid) for pid in listed.read().split()]

    def wait_for_children(self, count: int) -> list[int]:
        """Wait until the worker has ``count`` children; return their pids."""
        deadline = time.monotonic() + WAIT
        while len(found := self.children()) < count:
            assert time.monotonic() < deadline, f"{self.pid} has {found}"
            time.sleep(0.05)
        return found


class Host(Protocol):
    """What the fault tests need from one host's worker."""

    name: str

    def worker(
        self, receiver: OtlpReceiver, log_path: Path, env: dict[str, str]
    ) -> Any:
        """Start a worker; a context manager that yields a :class:`Worker`."""

    def run_jobs(self, count: int) -> list[str]:
        """Enqueue ``count`` quick jobs, wait until all finished, return ids."""

    def enqueue(self, count: int) -> list[str]:
        """Enqueue ``count`` quick jobs without waiting; return their ids."""

    def done(self, ids: list[str]) -> bool:
        """Return whether the last job in ``ids`` has finished, cheaply.

        Each worker runs its queue in order, so the last job is about the
        last to finish; :meth:`finished` then checks every job.
        """

    def start_slow_jobs(self, count: int, seconds: float) -> list[str]:
        """Enqueue ``count`` jobs that sleep ``seconds``; return their ids."""

    def start_span_job(self) -> str:
        """Enqueue a job that sleeps 30 s inside a span ``sleeping``."""

    def finished(self, ids: list[str]) -> bool:
        """Return whether every job in ``ids`` finished successfully."""


def _stop_quietly(process: subprocess.Popen[bytes]) -> None:
    # Kills the worker's whole process group: pool children and work
    # horses outlive a main process that exited or was killed.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class CeleryHost:
    """A prefork ``celery worker`` with two children, on Redis."""

    name = "celery"
    options: tuple[str, ...] = ("--pool", "prefork", "--concurrency", "2")

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.app: Any = None

    @contextmanager
    def worker(
        self, receiver: OtlpReceiver, log_path: Path, env: dict[str, str]
    ) -> Iterator[Worker]:
        queue = f"jobtrace-faults-{uuid.uuid4().hex[:8]}"
        command = [
            sys.executable, "-m", "celery", "--app", "worker_app", "worker",
            "--queues", queue, "--hostname", f"{queue}@%h",
            "--loglevel", "WARNING", "--without-heartbeat", "--without-gossip",
            "--without-mingle", *self.options,
        ]  # fmt: skip
        full_env = celery_workers.worker_env(receiver, self.broker_url, queue)
        full_env.update(env)
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                env=full_env,
                cwd=celery_workers.HERE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # A group of its own, so that _stop_quietly also ends the
                # children of a worker that did not stop.
                start_new_session=True,
            )
        self.app = celery_workers.producer(self.broker_url, queue)
        try:
            yield Worker(process.pid, lambda: [log_path], process)
        finally:
            _stop_quietly(process)

    def run_jobs(self, count: int) -> list[str]:
        results = [self.app.send_task("it.add", args=(n, n)) for n in range(count)]
        values = [result.get(timeout=WAIT) for result in results]
        assert values == [2 * n for n in range(count)]
        return [result.id for result in results]

    def enqueue(self, count: int) -> list[str]:
        return [self.app.send_task("it.add", args=(n, n)).id for n in range(count)]

    def done(self, ids: list[str]) -> bool:
        return bool(self.app.AsyncResult(ids[-1]).ready())

    def start_slow_jobs(self, count: int, seconds: float) -> list[str]:
        return [
            self.app.send_task("it.sleep", args=(seconds,)).id for _ in range(count)
        ]

    def start_span_job(self) -> str:
        return str(self.app.send_task("it.span_then_sleep").id)

    def finished(self, ids: list[str]) -> bool:
        return all(self.app.AsyncResult(job_id).state == "SUCCESS" for job_id in ids)


class CeleryMultiHost(CeleryHost):
    """A prefork worker that ``celery multi`` starts as a daemon."""

    name = "celery-multi"

    @contextmanager
    def worker(
        self, receiver: OtlpReceiver, log_path: Path, env: dict[str, str]
    ) -> Iterator[Worker]:
        queue = f"jobtrace-faults-{uuid.uuid4().hex[:8]}"
        files = log_path.parent / f"multi-{queue}"
        files.mkdir()
        node = f"{queue}@localhost"
        # celery multi reads a long option's value only after "=".
        command = [
            sys.executable, "-m", "celery", "multi", "start", node,
            "--app=worker_app", f"--pidfile={files}/%n.pid",
            f"--logfile={files}/%n%I.log", "--loglevel=WARNING",
            f"--queues={queue}", "--without-heartbeat", "--without-gossip",
            "--without-mingle", "--pool=prefork", "--concurrency=2",
        ]  # fmt: skip
        full_env = celery_workers.worker_env(receiver, self.broker_url, queue)
        full_env.update(env)
        subprocess.run(
            command, env=full_env, cwd=celery_workers.HERE, check=True, timeout=WAIT
        )
        pid_path = files / f"{queue}.pid"
        deadline = time.monotonic() + WAIT
        while not pid_path.exists() or not pid_path.read_text().strip():
            assert time.monotonic() < deadline, "celery multi wrote no pidfile"
            time.sleep(0.05)
        worker = Worker(int(pid_path.read_text()), lambda: sorted(files.glob("*.log")))
        self.app = celery_workers.producer(self.broker_url, queue)
        try:
            yield worker
        finally:
            if not worker.exited():
                worker.send_signal(signal.SIGKILL)


class RQHost:
    """RQ's forking worker, one work horse per job, on Redis."""

    name = "rq"

    def __init__(self, rq_url: str) -> None:
        from redis import Redis
        from rq import Queue

        self.rq_url = rq_url
        self.queue = Queue(
            f"jobtrace-faults-{uuid.uuid4().hex[:8]}",
            connection=Redis.from_url(rq_url),
        )

    @contextmanager
    def worker(
        self, receiver: OtlpReceiver, log_path: Path, env: dict[str, str]
    ) -> Iterator[Worker]:
        command = [
            sys.executable, "-m", "rq.cli", "worker", "-u", self.rq_url,
            "-c", "tests.rq.worker_settings",
            "-w", rq_workers.WORKER_CLASSES["forking"],
            "--logging_level", "WARNING", self.queue.name,
        ]  # fmt: skip
        full_env = rq_workers.worker_env(receiver)
        full_env.update(env)
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                env=full_env,
                cwd=rq_workers.ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # A group of its own, so that _stop_quietly also ends the
                # children of a worker that did not stop.
                start_new_session=True,
            )
        try:
            yield Worker(process.pid, lambda: [log_path], process)
        finally:
            _stop_quietly(process)
            self.queue.delete(delete_jobs=True)

    def run_jobs(self, count: int) -> list[str]:
        from tests.rq import jobs

        enqueued = [self.queue.enqueue(jobs.add, n, n) for n in range(count)]
        ids = [job.id for job in enqueued]
        deadline = time.monotonic() + WAIT
        # One worker runs the queue in order, so the last job ends last.
        while not self.finished(ids[-1:]):
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.01)
        assert self.finished(ids)
        return ids

    def enqueue(self, count: int) -> list[str]:
        from tests.rq import jobs

        return [self.queue.enqueue(jobs.add, n, n).id for n in range(count)]

    def done(self, ids: list[str]) -> bool:
        return self.finished(ids[-1:])

    def start_slow_jobs(self, count: int, seconds: float) -> list[str]:
        from tests.rq import jobs

        return [self.queue.enqueue(jobs.sleep, seconds).id for _ in range(count)]

    def start_span_job(self) -> str:
        from tests.rq import jobs

        return str(self.queue.enqueue(jobs.sleep_inside_span, 30).id)

    def finished(self, ids: list[str]) -> bool:
        from rq.job import Job, JobStatus

        found = Job.fetch_many(ids, connection=self.queue.connection)
        return all(
            job is not None and job.get_status() == JobStatus.FINISHED for job in found
        )


class DramatiqHost:
    """The ``dramatiq`` command with one worker process of 2 threads, on Redis.

    Two threads, not more, because six such workers share 2 vCPUs in the
    collector fault test, and more threads made its timings noisier.
    """

    name = "dramatiq"
    #: Worker threads of the one worker process.
    threads = 2

    def __init__(self, redis_url: str) -> None:
        from tests.dramatiq import actors
        from tests.dramatiq.workers import Target, build_broker

        suffix = uuid.uuid4().hex[:8]
        self.target = Target(
            broker_url=redis_url,
            namespace=f"jobtrace-faults-{suffix}",
            queue=f"jobtrace-faults-{suffix}",
            redis_url=redis_url,
        )
        self.broker = build_broker(redis_url, self.target.namespace)
        self.actors = actors.declare(self.broker, self.target.queue)
        self.sent = 0

    @contextmanager
    def worker(
        self, receiver: OtlpReceiver, log_path: Path, env: dict[str, str]
    ) -> Iterator[Worker]:
        from tests.dramatiq import workers as dramatiq_workers

        command = [
            str(dramatiq_workers.DRAMATIQ), "tests.dramatiq.worker_app",
            "--processes", "1", "--threads", str(self.threads),
            "--queues", self.target.queue,
        ]  # fmt: skip
        full_env = dramatiq_workers.worker_env(receiver, self.target)
        # The main process writes its workers' log lines to stdout, which
        # is a file here and would be written only in blocks.
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env)
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                env=full_env,
                cwd=dramatiq_workers.ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # A group of its own, so that _stop_quietly also ends the
                # children of a worker that did not stop.
                start_new_session=True,
            )
        try:
            yield Worker(process.pid, lambda: [log_path], process)
        finally:
            _stop_quietly(process)
            _delete_target(self.target)
            self.broker.close()

    def _ids(self, messages: list[Any]) -> list[str]:
        return [str(message.message_id) for message in messages]

    def _finished_count(self) -> int:
        from redis import Redis

        from tests.dramatiq.actors import done_key

        with Redis.from_url(self.target.redis_url) as client:
            return int(client.get(done_key(self.target.queue)) or 0)

    def run_jobs(self, count: int) -> list[str]:
        ids = self.enqueue(count)
        deadline = time.monotonic() + WAIT
        while not self.done(ids):
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.01)
        return ids

    def enqueue(self, count: int) -> list[str]:
        self.sent += count
        return self._ids([self.actors.tally.send() for _ in range(count)])

    def done(self, ids: list[str]) -> bool:
        # Dramatiq stores no results here, so the tally and wait actors
        # count their finished runs in Redis. Every message sent so far has finished
        # when the count reaches the number sent.
        return self._finished_count() >= self.sent

    def start_slow_jobs(self, count: int, seconds: float) -> list[str]:
        self.sent += count
        return self._ids([self.actors.wait.send(seconds) for _ in range(count)])

    def start_span_job(self) -> str:
        raise NotImplementedError("the Dramatiq actors open no span while waiting")

    def finished(self, ids: list[str]) -> bool:
        return self.done(ids)


def _delete_target(target: Any) -> None:
    from tests.dramatiq.conftest import _delete

    _delete(target)


def make_host(name: str, request: Any) -> Host:
    """Return the host called ``name``, with its broker fixtures resolved."""
    if name == "celery":
        return CeleryHost(request.getfixturevalue("redis_url"))
    if name == "celery-multi":
        return CeleryMultiHost(request.getfixturevalue("redis_url"))
    if name == "rq":
        return RQHost(request.getfixturevalue("redis_url"))
    if name == "dramatiq":
        return DramatiqHost(request.getfixturevalue("redis_url"))
    raise ValueError(f"unknown host {name!r}")


#: Host names, for ``pytest.mark.parametrize``.
HOSTS = ("celery", "rq", "dramatiq")
