"""A real Arize Phoenix server on 127.0.0.1, started once per test module.

Phoenix stores everything in a SQLite file under the fixture's temporary
directory and is configured to make no public-internet requests of its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Seconds to wait for a new server's span API to return 200. Startup runs
#: Phoenix's database migrations first. arize-phoenix 20.26 took about 15 s to
#: start on a 2-vCPU AMD EPYC VM, so this leaves room for slower CI runners.
STARTUP_TIMEOUT = 90
#: Seconds between SIGTERM and SIGKILL when the server is stopped.
STOP_TIMEOUT = 15
#: Lines of the server's log shown when startup or a test fails. The log
#: begins with thousands of lines of SQL from the migrations.
LOG_TAIL_LINES = 150


def pytest_configure(config: pytest.Config) -> None:
    """Keep arize-phoenix-client's pytest plugin from contacting a server.

    arize-phoenix depends on arize-phoenix-client, which registers a pytest
    plugin named ``phoenix`` through an entry point (arize-phoenix-client
    3.5). The plugin records every test marked ``phoenix`` as an experiment
    run on the server that PHOENIX_* or OTEL_EXPORTER_OTLP_ENDPOINT names, by
    default http://localhost:6006. Its documented switch
    PHOENIX_TEST_TRACKING=false stops those requests. The plugin reads the
    variable during collection, after this hook runs.
    """
    os.environ["PHOENIX_TEST_TRACKING"] = "false"


@dataclasses.dataclass(frozen=True)
class PhoenixServer:
    """A running ``phoenix serve`` process and where to reach it.

    ``endpoint`` has the name of :attr:`OtlpReceiver.endpoint`, so the worker
    harness in ``tests/celery/workers.py`` exports straight to Phoenix.
    """

    process: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path

    def get_json(self, path: str, **query: str) -> Any:
        """Send GET ``path`` to the REST API and decode the JSON response."""
        url = f"{self.endpoint}{path}"
        if query:
            url = f"{url}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the server's combined output."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def phoenix_env(http_port: int, grpc_port: int, working_dir: Path) -> dict[str, str]:
    """Environment of the server: a private database, no egress, free ports.

    The HTTP server listens on 127.0.0.1 only. arize-phoenix 20.26 binds its
    OTLP/gRPC receiver to every interface (``[::]``) and has no setting for
    its address, so it gets a free port that nothing here sends to.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PHOENIX_", "OTEL_"))
    }
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(http_port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(working_dir),
        # Turns off the FullStory and Scarf.sh pixels in the web UI.
        PHOENIX_TELEMETRY_ENABLED="false",
        # Turns off web fonts, the WASM sandbox download at startup and the
        # assistant's web and documentation access (arize-phoenix 20.26).
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        # Turns off the built-in LLM assistant, which the tests never use.
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",
    )
    return env


def wait_until_ready(server: PhoenixServer) -> None:
    """Poll the span API until it returns 200, failing if the server exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"phoenix serve exited with code {server.process.returncode} "
                f"during startup. Last lines of its log:\n{server.log_tail()}"
            )
        try:
            server.get_json("/v1/projects/default/spans", limit="1")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
        else:
            return
    pytest.fail(
        f"Timed out after {STARTUP_TIMEOUT} s waiting for phoenix serve to return "
        "200 for GET /v1/projects/default/spans. Last lines of its log:\n"
        f"{server.log_tail()}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server with SIGTERM, then SIGKILL if it is still running."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    """A fresh ``phoenix serve`` on free ports, stopped after the module."""
    executable = Path(sys.executable).with_name("phoenix")
    if not executable.exists():
        pytest.skip(
            f"arize-phoenix is not installed next to {sys.executable}; "
            "run the tests with `nox -s phoenix`"
        )
    working_dir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    log_path = working_dir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(executable), "serve"],
            env=phoenix_env(http_port, grpc_port, working_dir),
            cwd=working_dir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PhoenixServer(process, f"http://127.0.0.1:{http_port}", log_path)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the tail of Phoenix's log to the report of a failed test."""
    report: pytest.TestReport = yield
    server = getattr(item, "funcargs", {}).get("phoenix")
    if report.failed and isinstance(server, PhoenixServer):
        report.sections.append(("Phoenix server log (tail)", server.log_tail()))
    return report
