"""The trace context that travels with a Dramatiq message in its options.

Dramatiq encodes a message's ``options`` together with its arguments, so
the carrier that core writes at enqueue time is stored as a dict under
:data:`OPTIONS_KEY`. Beside core's keys, the carrier contains one key of
this adapter: the scheduled start of a delayed message. Dramatiq deletes the
``eta`` option when it moves the message from the delay queue to its queue,
so the worker could not read it back otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dramatiq.common import q_name

from jobtrace import Job

SYSTEM = "dramatiq"

#: The ``message.options`` key that contains the carrier.
OPTIONS_KEY = "jobtrace"
ETA_FIELD = "jobtrace_dramatiq_eta"
#: Retry counts from this one up count as the first attempt. No real job
#: retries a billion times, and OTLP carries only 64-bit integers, so a
#: larger attempt would lose its attribute in every export.
MAX_RETRIES = 10**9


def read_carrier(message: Any) -> dict[str, Any]:
    """Return the carrier stored in the message's options, or an empty dict.

    Messages enqueued without jobtrace have no carrier and run as new roots.
    """
    options = getattr(message, "options", None)
    carrier = options.get(OPTIONS_KEY) if isinstance(options, Mapping) else None
    return dict(carrier) if isinstance(carrier, Mapping) else {}


def write_carrier(message: Any, carrier: dict[str, Any]) -> None:
    """Store ``carrier`` in the message's options before the broker encodes it.

    The options dict is changed in place, as Dramatiq's own middleware
    changes it, because a message is a frozen dataclass whose options
    attribute cannot be replaced.
    """
    message.options[OPTIONS_KEY] = carrier


def record_eta(message: Any, carrier: dict[str, Any]) -> None:
    """Copy a delayed message's ``eta`` option into ``carrier`` as Unix time."""
    eta = message.options.get("eta")
    if isinstance(eta, (int, float)) and not isinstance(eta, bool):
        carrier[ETA_FIELD] = repr(eta / 1000)


def attempt_of(message: Any) -> int:
    """Return the attempt number of a message, counting from 1.

    The Retries middleware counts the retries so far in the ``retries``
    option, so the attempt is one more. The option comes from any client
    that wrote the message, so anything but a non-negative integer below
    :data:`MAX_RETRIES` counts as the first attempt.
    """
    retries = message.options.get("retries")
    if isinstance(retries, bool) or not isinstance(retries, int):
        return 1
    return retries + 1 if 0 < retries < MAX_RETRIES else 1


def job_from_message(message: Any, carrier: Mapping[str, Any]) -> Job:
    """Return core's :class:`~jobtrace.Job` for a message, with attempt and eta."""
    return Job(
        system=SYSTEM,
        name=str(message.actor_name),
        id=str(message.message_id),
        # A delayed message is sent to the queue's delay queue, name.DQ.
        queue=q_name(str(message.queue_name)) or None,
        attempt=attempt_of(message),
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
