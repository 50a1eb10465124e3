"""The django_dramatiq setup from docs/dramatiq.md, run in a fresh interpreter.

Django's settings can be configured once per process, so the recipe runs in
a subprocess that prints what it found as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .workers import ROOT

pytest.importorskip("django_dramatiq")

_RECIPE = """
import json

import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django_dramatiq"],
    DRAMATIQ_BROKER={
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": [
            "jobtrace_dramatiq.Tracing",
            "dramatiq.middleware.AgeLimit",
            "dramatiq.middleware.TimeLimit",
            "dramatiq.middleware.Callbacks",
            "dramatiq.middleware.Retries",
        ],
    },
)
django.setup()

import dramatiq
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
jobtrace.configure(tracer_provider=provider)
broker = dramatiq.get_broker()
broker.emit_after("process_boot")


@dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=20)
def charge() -> None:
    raise ConnectionError("card service busy")


charge.send()
worker = dramatiq.Worker(broker, worker_timeout=50)
worker.start()
broker.join(charge.queue_name, fail_fast=False)
worker.join()
worker.stop()
print(json.dumps({
    "middleware": [type(m).__name__ for m in broker.middleware],
    "spans": [
        [span.name, span.attributes.get("jobtrace.job.outcome")]
        for span in exporter.get_finished_spans()
    ],
}))
"""


def test_django_middleware_setting() -> None:
    """Tracing listed first in MIDDLEWARE traces sends, runs and retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", _RECIPE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["middleware"][0] == "Tracing"
    assert found["spans"] == [
        ["send charge", None],
        ["send charge", None],
        ["process charge", "retry"],
        ["process charge", "failure"],
    ]
