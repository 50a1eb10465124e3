"""Jobs that make many spans, for the span budget's worker tests."""

from __future__ import annotations

import time

from opentelemetry.trace import Status, StatusCode

import jobtrace


def many_spans(batches: int, rows: int, failing_row: int) -> int:
    """Open a span per batch with a span per row below it; one row fails."""
    tracer = jobtrace.tracer()
    for batch in range(batches):
        with tracer.start_as_current_span("batch", attributes={"batch": batch}):
            for row in range(rows):
                span = tracer.start_span("row", attributes={"row": row})
                if batch * rows + row == failing_row:
                    span.set_status(Status(StatusCode.ERROR, "bad row"))
                span.end()
    return batches * rows


def spans_until_released(count: int, key: str) -> str:
    """End ``count`` spans, then wait up to 60 s for ``key`` in Redis."""
    from rq import get_current_job

    tracer = jobtrace.tracer()
    for number in range(count):
        tracer.start_span("early", attributes={"number": number}).end()
    job = get_current_job()
    assert job is not None
    deadline = time.monotonic() + 60
    while not job.connection.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    tracer.start_span("late").end()
    return "released"
