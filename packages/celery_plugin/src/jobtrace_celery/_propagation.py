"""Reading jobtrace's headers back from Celery's requests and messages.

Celery delivers message headers in more than one shape. Protocol 2 keeps
them at the top of the request, and the worker merges a protocol 1
message's headers into the same place. Headers passed through
``apply_async`` or carried over by ``retry()`` can also end up nested under
a ``headers`` key. The carrier built here looks in each place in turn, and
the first match wins.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback

import jobtrace
from jobtrace import Job

SYSTEM = "celery"

#: Retry counts from this one up count as the first attempt. No real job
#: retries a billion times, and OTLP carries only 64-bit integers, so a
#: larger attempt would lose its attribute in every export.
MAX_RETRIES = 10**9


def build_carrier(request: Any) -> dict[str, Any]:
    """Collect jobtrace's headers from a task request, request dict or message."""
    layers = [request]
    nested = _lookup(request, "headers")
    if isinstance(nested, Mapping):
        layers.append(nested)
        inner = nested.get("headers")
        if isinstance(inner, Mapping):
            layers.append(inner)

    carrier: dict[str, Any] = {}
    for key in jobtrace.header_names():
        for layer in layers:
            value = _lookup(layer, key)
            if value is not None:
                carrier[key] = value
                break
    return carrier


def attempt_number(retries: Any) -> int:
    """Turn Celery's ``retries`` header into a 1-based attempt number.

    The header comes from any client that wrote the message, so anything that is not
    a non-negative integer below :data:`MAX_RETRIES` counts as the first attempt.
    """
    try:
        count = int(retries or 0)
    except (TypeError, ValueError, OverflowError):
        return 1
    return count + 1 if 0 <= count < MAX_RETRIES else 1


def to_timestamp(value: Any) -> float | None:
    """Convert Celery's ``eta`` (ISO 8601 string or datetime) to Unix time."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    return None


def job_from_request(name: str, request: Any) -> Job:
    """Describe the job of a task request, a request dict or a ``Context``."""
    fields = request if isinstance(request, dict) else vars(request)
    delivery = fields.get("delivery_info") or {}
    return Job(
        system=SYSTEM,
        name=name,
        id=fields.get("id"),
        queue=delivery.get("routing_key") or delivery.get("exchange") or None,
        attempt=attempt_number(fields.get("retries")),
        eta=to_timestamp(fields.get("eta")),
    )


def unwrap_error(error: Any) -> Any:
    """Return the task's own exception from billiard's wrappers around it.

    billiard wraps exceptions that cross the pool's process boundary.
    """
    for _ in range(4):
        if isinstance(error, ExceptionWithTraceback):
            error = error.exc
        elif isinstance(error, ExceptionInfo):
            error = error.exception
        else:
            break
    return error


def _lookup(source: Any, key: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)
