"""The ``jobtrace demo`` command, run as a user runs it."""

from __future__ import annotations

import os
import re
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


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """One run of the demo without an endpoint, shared by the output tests."""
    return run_demo({})


def test_demo_prints_trees(demo: subprocess.CompletedProcess[str]) -> None:
    """The demo exits 0 and prints send and process spans of every job."""
    done = demo

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


def test_demo_prints_rq_traces(demo: subprocess.CompletedProcess[str]) -> None:
    """The demo prints the RQ worker's runs with their outcomes."""
    done = demo

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "POST /refunds" in out
    assert "send jobtrace._demo.rq_jobs.add" in out
    assert outcomes_of(out, "jobtrace._demo.rq_jobs.add") == ["success"]
    assert outcomes_of(out, "jobtrace._demo.rq_jobs.fail") == ["failure"]
    assert outcomes_of(out, "jobtrace._demo.rq_jobs.flaky") == ["retry", "success"]
    assert "rq add(2, 3) -> 5" in out
    assert "rq fail() -> ValueError: card declined" in out
    assert "rq flaky() -> 'paid'" in out


def test_demo_prints_dramatiq_traces(demo: subprocess.CompletedProcess[str]) -> None:
    """The demo prints the Dramatiq worker's runs, retries and pipeline."""
    done = demo

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "POST /invoices" in out
    assert "dramatiq flaky() sent" in out
    assert outcomes_of(out, "fail") == ["failure"]
    assert outcomes_of(out, "flaky") == ["retry", "success"]
    assert outcomes_of(out, "double") == ["success"]
    # add(2, 3) sent by the request, and add(3) sent by the pipeline's worker.
    assert outcomes_of(out, "add") == ["success", "success"]
    assert "└─ send add" in out


def test_demo_forwards_to_endpoint() -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the backend gets every span."""
    with OtlpReceiver() as backend:
        done = run_demo({"OTEL_EXPORTER_OTLP_ENDPOINT": backend.endpoint})
        spans = backend.spans()

    assert done.returncode == 0, done.stderr
    processes = [s for s in spans if s.name.startswith("process ")]
    rq_runs = [s for s in processes if s.attributes["messaging.system"] == "rq"]
    rq_outcomes = sorted(s.attributes["jobtrace.job.outcome"] for s in rq_runs)
    dramatiq_runs = [
        s for s in processes if s.attributes["messaging.system"] == "dramatiq"
    ]
    assert len(processes) == 21
    assert rq_outcomes == ["failure", "retry", "success", "success"]
    assert {s.resource["jobtrace.component"] for s in rq_runs} == {"worker"}
    assert len(dramatiq_runs) == 6
    assert {s.resource["jobtrace.component"] for s in dramatiq_runs} == {"worker"}
    assert {s.resource["service.name"] for s in spans} == {"jobtrace-demo"}


def outcomes_of(out: str, function: str) -> list[str]:
    """Return the sorted outcomes of the printed process spans of ``function``."""
    pattern = re.compile(rf"─ process {re.escape(function)} .*\boutcome=(\w+)")
    return sorted(match[1] for match in pattern.finditer(out))
