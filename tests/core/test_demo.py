"""The ``jobtrace demo`` command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jobtrace._receiver import OtlpReceiver

pytestmark = pytest.mark.integration


def run_demo(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "jobtrace", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_demo_prints_trees() -> None:
    """The demo exits 0 and prints send and process spans of every job."""
    done = run_demo({})

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "GET /checkout" in out
    assert out.count("process demo.add") == 7
    assert "process demo.fail" in out
    assert "outcome=failure" in out
    assert "ERROR ValueError" in out
    assert "outcome=retry" in out
    assert "as previous_attempt" in out
    assert "component=worker" in out
    assert "component=web" in out


def test_demo_forwards_to_endpoint() -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the backend gets every span."""
    with OtlpReceiver() as backend:
        done = run_demo({"OTEL_EXPORTER_OTLP_ENDPOINT": backend.endpoint})
        spans = backend.spans()

    assert done.returncode == 0, done.stderr
    processes = [s for s in spans if s.name.startswith("process ")]
    assert len(processes) == 11
    assert {s.resource["service.name"] for s in spans} == {"jobtrace-demo"}
