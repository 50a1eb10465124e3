"""jobtrace shares Celery, RQ and Dramatiq workers with a running ddtrace.

ddtrace's writer and telemetry could send to addresses that a test cannot
control from Python, so ``ddtrace_scenario`` runs inside a new network
namespace (``unshare -n``), whose only interface is loopback. It starts
Redis, an OTLP receiver and a fake Datadog agent on 127.0.0.1 there. Then
it runs a producer and a worker per host with both tracers, and writes
what each received as JSON for the tests below.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
#: Maximum run time of the scenario in seconds. It took 10 to 13 s on a
#: 2-vCPU machine.
SCENARIO_TIMEOUT = 150
# The new namespace's loopback interface starts down.
NAMESPACE_COMMAND = (
    'ip link set lo up && exec "$0" -m tests.faults.ddtrace_scenario "$1"'
)


def _missing_requirement() -> str | None:
    """Return why the scenario cannot run here, or None when it can."""
    if importlib.util.find_spec("ddtrace") is None:
        return "ddtrace is not installed"
    for program in ("unshare", "ip", "redis-server"):
        if shutil.which(program) is None:
            return f"{program} is not on PATH"
    probe = subprocess.run(
        ["unshare", "-n", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"unshare -n is not permitted: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the scenario once in a network namespace and return its result."""
    missing = _missing_requirement()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)

    out_path = tmp_path_factory.mktemp("ddtrace") / "result.json"
    # The scenario sets every ddtrace option that it needs, and an inherited
    # one such as DD_TRACE_ENABLED=false would change what it tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    # With its own PID namespace, every process of the scenario dies with
    # unshare when the timeout kills it.
    command = [
        "unshare", "--net", "--pid", "--fork", "--kill-child",
        "sh", "-c", NAMESPACE_COMMAND, sys.executable, str(out_path),
    ]  # fmt: skip
    finished = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    result: dict[str, Any] = json.loads(out_path.read_text())
    assert "error" not in result, result["error"]
    return result


def _spans(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [span for span in result["otlp"] if span["name"] == name]


def _one_span(result: dict[str, Any], name: str, job_id: str) -> dict[str, Any]:
    (found,) = [
        span
        for span in _spans(result, name)
        if span["attributes"].get("messaging.message.id") == job_id
    ]
    return found


def _outcomes(result: dict[str, Any], name: str, job_id: str) -> list[str]:
    runs = [
        span
        for span in _spans(result, name)
        if span["attributes"].get("messaging.message.id") == job_id
    ]
    return [span["attributes"]["jobtrace.job.outcome"] for span in runs]


def _agent_spans(scenario: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [span for span in scenario["agent"]["spans"] if span["name"] == name]


def _warnings(text: str, host: str) -> list[str]:
    return re.findall(rf"ddtrace also traces {host}", text)


def test_namespace_has_only_loopback(scenario: dict[str, Any]) -> None:
    """The scenario ran where no packet could leave the machine."""
    assert scenario["interfaces"] == ["lo"]


def test_agent_got_only_traces(scenario: dict[str, Any]) -> None:
    """ddtrace sent traces and agent queries, and nothing else, to the agent."""
    paths = {path.split()[1] for path in scenario["agent"]["paths"]}

    assert "/v0.4/traces" in paths
    assert paths <= {"/info", "/v0.4/traces"}


def test_celery_jobs_unchanged(scenario: dict[str, Any]) -> None:
    """Results, exceptions and retries are as without any tracer."""
    celery = scenario["celery"]
    ids = celery["ids"]

    assert celery["add"] == 5
    assert celery["fail"] == ["ValueError", ["boom"]]
    assert celery["flaky"] == "done"
    assert _outcomes(celery, "process it.add", ids["add"]) == ["success"]
    assert _outcomes(celery, "process it.fail", ids["fail"]) == ["failure"]
    assert sorted(_outcomes(celery, "process it.flaky", ids["flaky"])) == [
        "retry",
        "success",
    ]


def test_celery_headers_intact(scenario: dict[str, Any]) -> None:
    """ddtrace's headers and jobtrace's context reach the task as written."""
    celery = scenario["celery"]
    headers = celery["headers"]
    job_id = celery["ids"]["headers"]
    own_send = _one_span(celery, "send it.headers", job_id)
    own_run = _one_span(celery, "process it.headers", job_id)
    (root,) = _agent_spans(scenario, "enqueue")

    # ddtrace writes traceparent too, so jobtrace moved to its own header.
    assert headers["traceparent"].split("-")[1].endswith(root["trace_id"])
    assert headers["traceparent"].split("-")[2] == root["span_id"]
    assert headers["tracestate"].startswith("dd=")
    assert int(headers["x-datadog-trace-id"]) == int(root["trace_id"], 16)
    assert int(headers["x-datadog-parent-id"]) == int(root["span_id"], 16)
    assert headers["jobtrace_traceparent"].split("-")[2] == own_send["span_id"]
    assert own_run["links"] == [[own_send["trace_id"], own_send["span_id"]]]
    assert not own_run["trace_id"].endswith(root["trace_id"])


def test_celery_ddtrace_propagates(scenario: dict[str, Any]) -> None:
    """Every ddtrace run span joins the producer's ddtrace trace.

    The retry's second run is a child of the publish span that ddtrace
    opened in the worker for the retry, which is a child of the first run.
    """
    (root,) = _agent_spans(scenario, "enqueue")
    ids = scenario["celery"]["ids"]
    runs = {
        (span["meta"]["celery.id"], span["meta"]["celery.state"]): span
        for span in _agent_spans(scenario, "celery.run")
    }
    (republished,) = _agent_spans(scenario, "celery.apply")
    first_try = runs[(ids["flaky"], "RETRY")]
    second_try = runs[(ids["flaky"], "SUCCESS")]

    assert sorted(runs) == sorted(
        [
            (ids["headers"], "SUCCESS"),
            (ids["add"], "SUCCESS"),
            (ids["fail"], "FAILURE"),
            (ids["flaky"], "RETRY"),
            (ids["flaky"], "SUCCESS"),
        ]
    )
    assert {span["trace_id"] for span in runs.values()} == {root["trace_id"]}
    for (job_id, state), span in runs.items():
        if (job_id, state) != (ids["flaky"], "SUCCESS"):
            assert span["parent_id"] == root["span_id"], (job_id, state)
    assert republished["parent_id"] == first_try["span_id"]
    assert second_try["parent_id"] == republished["span_id"]
    assert runs[(ids["fail"], "FAILURE")]["error"] == 1


def test_celery_warns_once(scenario: dict[str, Any]) -> None:
    """The producer and the prefork worker each warn once, with the fix."""
    celery = scenario["celery"]

    assert len(_warnings(celery["log"], "Celery")) == 1
    assert len(_warnings(celery["worker_log"], "Celery")) == 1
    assert "DD_TRACE_CELERY_ENABLED=false" in celery["log"]


def test_rq_jobs_unchanged(scenario: dict[str, Any]) -> None:
    """Results, exceptions and retries are as without any tracer."""
    rq = scenario["rq"]
    ids = rq["ids"]

    assert rq["add"] == 5
    assert rq["fail"] == "ValueError: boom"
    assert rq["flaky"] == 2
    assert _outcomes(rq, "process tests.rq.jobs.add", ids["add"]) == ["success"]
    assert _outcomes(rq, "process tests.rq.jobs.fail", ids["fail"]) == ["failure"]
    assert sorted(_outcomes(rq, "process tests.rq.jobs.fail_once", ids["flaky"])) == [
        "retry",
        "success",
    ]


def test_rq_meta_intact(scenario: dict[str, Any]) -> None:
    """ddtrace's and jobtrace's contexts sit side by side in the job's meta."""
    rq = scenario["rq"]
    meta = rq["meta"]
    job_id = rq["ids"]["add"]
    own_send = _one_span(rq, "send tests.rq.jobs.add", job_id)
    own_run = _one_span(rq, "process tests.rq.jobs.add", job_id)
    (enqueued,) = [
        span
        for span in _agent_spans(scenario, "rq.queue.enqueue_job")
        if span["meta"]["job.id"] == job_id
    ]

    assert meta["jobtrace"]["traceparent"].split("-")[2] == own_send["span_id"]
    assert own_run["links"] == [[own_send["trace_id"], own_send["span_id"]]]
    assert int(meta["x-datadog-trace-id"]) == int(enqueued["trace_id"], 16)
    assert int(meta["x-datadog-parent-id"]) == int(enqueued["span_id"], 16)
    assert meta["traceparent"].split("-")[2] == enqueued["span_id"]


def test_rq_ddtrace_propagates(scenario: dict[str, Any]) -> None:
    """Each work horse's ddtrace span is a child of its job's enqueue span."""
    enqueued = {
        span["meta"]["job.id"]: span
        for span in _agent_spans(scenario, "rq.queue.enqueue_job")
    }
    performed = _agent_spans(scenario, "rq.worker.perform_job")
    flaky = scenario["rq"]["ids"]["flaky"]

    assert sorted(enqueued) == sorted(scenario["rq"]["ids"].values())
    assert len(performed) == 4
    for span in performed:
        parent = enqueued[span["meta"]["job.id"]]
        assert span["trace_id"] == parent["trace_id"]
        assert span["parent_id"] == parent["span_id"]
    assert len({span["pid"] for span in performed}) == 4
    assert sorted(
        span["meta"]["job.status"]
        for span in performed
        if span["meta"]["job.id"] == flaky
    ) == ["finished", "queued"]


def test_rq_warns_once(scenario: dict[str, Any]) -> None:
    """The producer and the forking worker each warn once, with the fix."""
    rq = scenario["rq"]

    assert len(_warnings(rq["log"], "RQ")) == 1
    assert len(_warnings(rq["worker_log"], "RQ")) == 1
    assert "DD_TRACE_RQ_ENABLED=false" in rq["log"]


def test_dramatiq_runs_unchanged(scenario: dict[str, Any]) -> None:
    """Outcomes and retries are as without any tracer."""
    dramatiq = scenario["dramatiq"]
    ids = dramatiq["ids"]

    assert _outcomes(dramatiq, "process add", ids["add"]) == ["success"]
    assert _outcomes(dramatiq, "process fail", ids["fail"]) == ["failure"]
    assert sorted(_outcomes(dramatiq, "process fail_twice", ids["fail_twice"])) == [
        "retry",
        "retry",
        "success",
    ]


def test_dramatiq_send_spans_only(scenario: dict[str, Any]) -> None:
    """ddtrace traces each send, and adds nothing to the message.

    ddtrace 4.16 wraps only ``Actor.send_with_options`` for Dramatiq, so
    the run has one trace, jobtrace's, and its context arrives alone.
    """
    dramatiq = scenario["dramatiq"]
    job_id = dramatiq["ids"]["show_options"]
    own_send = _one_span(dramatiq, "send show_options", job_id)
    own_run = _one_span(dramatiq, "process show_options", job_id)
    sends = _agent_spans(scenario, "dramatiq.Actor.send_with_options")
    names = sorted(span["meta"]["actor.name"] for span in sends)

    assert names == sorted(dramatiq["ids"])
    assert all(span["parent_id"] == "0" * 16 for span in sends)
    assert own_run["attributes"]["test.options"] == ["jobtrace", "redis_message_id"]
    assert own_run["links"] == [[own_send["trace_id"], own_send["span_id"]]]


def test_dramatiq_no_warning(scenario: dict[str, Any]) -> None:
    """jobtrace does not warn, because the runs are traced once."""
    dramatiq = scenario["dramatiq"]

    assert "also traces" not in dramatiq["log"]
    assert "also traces" not in dramatiq["worker_log"]
