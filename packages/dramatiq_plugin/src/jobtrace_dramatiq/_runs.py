"""Process spans: one per run of a message on a worker thread.

A worker thread runs one message at a time, so the open run is kept per
thread, between ``before_process_message`` and ``after_process_message``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq.errors import ActorNotFound

import jobtrace
from jobtrace import Outcome
from jobtrace_dramatiq._outcomes import run_outcome
from jobtrace_dramatiq._propagation import job_from_message, read_carrier

log = logging.getLogger(__name__)


class _Run:
    """A run in progress on one worker thread."""

    __slots__ = ("handle", "retried")

    def __init__(self, handle: jobtrace.RunHandle) -> None:
        self.handle = handle
        self.retried = False


# Keyed by the ident of the worker thread.
_runs: jobtrace.BoundedRegistry[int, _Run] = jobtrace.BoundedRegistry()


def begin(message: Any) -> None:
    """Open the process span of ``message`` and make it current on this thread."""
    thread = threading.get_ident()
    stale = _runs.pop(thread)
    if stale is not None:
        # Only reachable if Dramatiq skipped this thread's after hooks.
        # Ending the run also detaches its context from the thread.
        log.debug("Run of job %s on this thread never ended", stale.handle.job.id)
        jobtrace.end_run(stale.handle, Outcome.INTERRUPTED)

    carrier = read_carrier(message)
    handle = jobtrace.begin_run(
        job_from_message(message, carrier),
        carrier,
        arguments=lambda: (message.args, message.kwargs),
    )
    _runs.put(thread, _Run(handle))


def mark_retried(message_id: str) -> None:
    """Record a send of the message that this thread is running: a retry."""
    run = _runs.get(threading.get_ident())
    if run is not None and run.handle.job.id == message_id:
        run.retried = True


def end(broker: Any, message: Any, exception: BaseException | None) -> None:
    """End this thread's run with the outcome that ``exception`` gives."""
    run = _runs.pop(threading.get_ident())
    if run is None:
        log.debug("No process span for message %s", message.message_id)
        return
    outcome, expected = Outcome.INTERRUPTED, False
    try:
        outcome, expected = run_outcome(broker, message, exception, run.retried)
    finally:
        try:
            jobtrace.end_run(run.handle, outcome, exception, expected=expected)
        finally:
            # The next message on this thread must not start inside this run.
            run.handle.detach()


def skip(message: Any, *, report: bool) -> None:
    """End this thread's run as skipped.

    With ``report``, a skipped run that never began is reported too: a
    middleware listed before Tracing raised SkipMessage, so
    before_process_message never reached Tracing.
    """
    run = _runs.pop(threading.get_ident())
    if run is not None:
        jobtrace.end_run(run.handle, Outcome.SKIPPED)
        return
    if not report:
        return
    carrier = read_carrier(message)
    handle = jobtrace.begin_run(
        job_from_message(message, carrier), carrier, attach=False
    )
    jobtrace.end_run(handle, Outcome.SKIPPED)


def reject_unknown_actor(broker: Any, message: Any) -> None:
    """Report a run with outcome rejected for a message to an undeclared actor.

    The consumer thread rejects such a message without any process hook.
    Every other rejection follows a run that is already traced.
    """
    if message.actor_name in broker.actors:
        return
    carrier = read_carrier(message)
    handle = jobtrace.begin_run(
        job_from_message(message, carrier), carrier, attach=False
    )
    jobtrace.end_run(handle, Outcome.REJECTED, ActorNotFound(message.actor_name))


def interrupt(worker: Any) -> None:
    """End the runs of actors still running once the worker stopped waiting.

    Their threads die when the process exits, so their spans end here,
    from the thread that stops the worker, with outcome ``interrupted``.
    """
    for thread in getattr(worker, "workers", ()):
        if thread.ident is None:
            continue
        run = _runs.pop(thread.ident)
        if run is not None:
            # The context belongs to the actor's thread. It stays attached
            # there, which is harmless because that thread never takes
            # another message.
            run.handle.token = None
            jobtrace.end_run(run.handle, Outcome.INTERRUPTED)
