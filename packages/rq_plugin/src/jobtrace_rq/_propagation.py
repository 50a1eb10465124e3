"""The trace context that travels with an RQ job in ``job.meta``.

RQ jobs have no message headers, so the carrier that core writes at enqueue
time is stored as a dict under :data:`META_KEY` in the job's ``meta``, which
RQ saves and loads together with the job. Beside core's keys, the carrier
contains two keys of this adapter: the attempt number of the next run and the
scheduled start of a delayed job, both as strings.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

import jobtrace
from jobtrace import Job

SYSTEM = "rq"

#: The ``job.meta`` key that contains the carrier.
META_KEY = "jobtrace"
ATTEMPT_FIELD = "jobtrace_rq_attempt"
ETA_FIELD = "jobtrace_rq_eta"


def read_carrier(job: Any) -> dict[str, Any]:
    """Return the carrier stored in ``job.meta``, or an empty dict.

    Jobs enqueued without jobtrace, or before it was installed, have no
    carrier and run as new roots.
    """
    meta = getattr(job, "meta", None)
    try:
        carrier = meta.get(META_KEY) if isinstance(meta, Mapping) else None
        return dict(carrier) if isinstance(carrier, Mapping) else {}
    except Exception:
        # Anything that can write to Redis can write the meta, including
        # a mapping whose methods raise.
        return {}


def write_carrier(job: Any, carrier: dict[str, Any]) -> None:
    """Store ``carrier`` in ``job.meta`` before RQ saves the job.

    The meta dict is replaced rather than changed in place, because RQ keeps
    the dict that the caller passed as ``meta=``, and a caller may pass the
    same dict to many enqueues.
    """
    meta = job.meta if isinstance(job.meta, Mapping) else {}
    job.meta = {**meta, META_KEY: carrier}


def attempt_of(job: Any, carrier: Mapping[str, Any]) -> int:
    """Return the attempt number of the job's next run, counting from 1.

    A retry sent by an instrumented worker records the number in the
    carrier. Without it, RQ's ``number_of_retries`` (counted by RQ 2.x and
    newer for jobs that return ``Retry``) gives the number.
    """
    recorded = carrier.get(ATTEMPT_FIELD)
    # str.isdigit() also accepts digits such as "²" that int() rejects.
    if isinstance(recorded, str) and recorded.isdecimal() and len(recorded) < 10:
        return max(1, int(recorded))
    retries = getattr(job, "number_of_retries", None)
    return 1 + retries if isinstance(retries, int) and retries > 0 else 1


def next_attempt(job: Any) -> int:
    """Return the attempt number of the run after the job's latest one.

    Inside the job's own run that is the run's attempt plus one, elsewhere
    the attempt that the job's carrier recorded for its latest run plus one.
    """
    current = jobtrace.current_job()
    if current is not None and current.id == job.id:
        return current.attempt + 1
    return attempt_of(job, read_carrier(job)) + 1


def to_timestamp(value: Any) -> float | None:
    """Convert a scheduled ``datetime`` to Unix time.

    RQ reads a naive datetime as local time, and so does
    :meth:`datetime.datetime.timestamp`.
    """
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return None


def job_from_rq(job: Any, carrier: Mapping[str, Any], queue: str | None = None) -> Job:
    """Describe an RQ job for core, with its carrier's attempt and schedule.

    ``queue`` overrides the job's ``origin``, which RQ sets only once the
    enqueue has begun.
    """
    return Job(
        system=SYSTEM,
        name=str(job.func_name),
        id=job.id,
        queue=queue or getattr(job, "origin", None) or None,
        attempt=attempt_of(job, carrier),
        eta=_parse_eta(carrier.get(ETA_FIELD)),
    )


def _parse_eta(value: Any) -> float | None:
    if not isinstance(value, str) or len(value) > 32:
        return None
    try:
        eta = float(value)
    except ValueError:
        return None
    return eta if math.isfinite(eta) else None
