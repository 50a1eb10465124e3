"""Send spans: one per message that a broker enqueues.

Dramatiq calls ``before_enqueue`` and ``after_enqueue`` on the thread that
enqueues, so the open send is kept per thread between the two.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import jobtrace
from jobtrace_dramatiq import _runs
from jobtrace_dramatiq._propagation import job_from_message, record_eta, write_carrier

log = logging.getLogger(__name__)


class EnqueueError(Exception):
    """The broker raised while it enqueued a message.

    Dramatiq has no hook for a failed enqueue. A send whose
    ``after_enqueue`` never ran is ended with this error by the next
    enqueue or run on the same thread.
    """


# Delayed messages that a consumer thread keeps in memory until their eta,
# keyed by (message id, thread ident). The consumer then enqueues them again.
_delayed: jobtrace.BoundedRegistry[tuple[str, int], bool] = jobtrace.BoundedRegistry()
# The send that this thread opened in before_enqueue: (message id, handle).
_pending = threading.local()


def mark_delayed(message: Any) -> None:
    """Record that this consumer thread keeps a delayed message until its eta."""
    _delayed.put((message.message_id, threading.get_ident()), True)


def begin(message: Any) -> None:
    """Open the send span of ``message`` and store its carrier in the message."""
    # A consumer thread enqueues a delayed message again once its eta has
    # passed. That is the same send, and its carrier stays as it is.
    if _delayed.pop((message.message_id, threading.get_ident())):
        return
    pending = getattr(_pending, "send", None)
    if pending is not None:
        # The RabbitMQ broker calls before_enqueue again when it retries a
        # publish after a connection error.
        if pending[0] == message.message_id:
            return
        fail_pending()

    carrier: dict[str, Any] = {}
    record_eta(message, carrier)
    _runs.mark_retried(message.message_id)
    handle = jobtrace.begin_send(job_from_message(message, carrier), carrier)
    write_carrier(message, carrier)
    _pending.send = (message.message_id, handle)


def end(message: Any) -> None:
    """End the send span of ``message`` after the broker enqueued it."""
    pending = getattr(_pending, "send", None)
    if pending is None or pending[0] != message.message_id:
        return
    _pending.send = None
    jobtrace.end_send(pending[1])


def fail_pending() -> None:
    """End this thread's open send, if any, as failed.

    NOTE: the span ends when the failure is noticed, not when the broker
    raised, so its duration may be too long.
    """
    pending = getattr(_pending, "send", None)
    if pending is None:
        return
    _pending.send = None
    message_id, handle = pending
    log.debug("Enqueue of message %s raised before after_enqueue ran", message_id)
    jobtrace.end_send(handle, EnqueueError("the broker raised during the enqueue"))


def clear() -> None:
    """Forget the delayed messages that consumer threads keep."""
    _delayed.clear()
