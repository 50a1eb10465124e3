"""Runs that the worker's main process reports after a pool child died."""

from __future__ import annotations

import time
import types
from typing import Any

import pytest
from billiard.exceptions import WorkerLostError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from jobtrace_celery import _reports


def _lost_request(*, cancelled: bool) -> Any:
    """A stand-in for celery.worker.request.Request whose child died."""
    return types.SimpleNamespace(
        name="t.lost",
        request_dict={"id": f"lost-{cancelled}", "retries": 0},
        time_start=time.time() - 1,
        _already_cancelled=cancelled,
        _already_revoked=False,
    )


@pytest.mark.parametrize(
    ("cancelled", "outcome"),
    [
        pytest.param(False, "killed", id="killed"),
        pytest.param(True, "interrupted", id="cancelled-by-cold-shutdown"),
    ],
)
def test_lost_child_outcome(
    cancelled: bool, outcome: str, exporter: InMemorySpanExporter
) -> None:
    """A dead child's job is killed, or interrupted when a cold shutdown
    cancelled it first."""
    exc_info = types.SimpleNamespace(exception=WorkerLostError("gone"))
    calls = []

    _reports.wrapped_on_failure(
        lambda *args, **kwargs: calls.append(args),
        _lost_request(cancelled=cancelled),
        (exc_info,),
        {},
    )

    (span,) = exporter.get_finished_spans()
    assert calls == [(exc_info,)]
    assert span.attributes["jobtrace.job.outcome"] == outcome
    assert span.attributes["jobtrace.job.reported_by_parent"] is True
