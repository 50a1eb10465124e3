"""A job body that makes many spans through the OpenTelemetry API."""

from __future__ import annotations

import time

from opentelemetry import trace

# A module-level tracer, as application code gets one: under
# opentelemetry-instrument it comes from the provider before jobtrace
# takes that provider over.
tracer = trace.get_tracer(__name__)


def make_spans(count: int, then_sleep: float) -> int:
    """End ``count`` spans named ``row``, then sleep ``then_sleep`` seconds."""
    for number in range(count):
        tracer.start_span("row", attributes={"row": number}).end()
    time.sleep(then_sleep)
    return count
