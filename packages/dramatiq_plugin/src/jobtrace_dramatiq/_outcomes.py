"""The outcome of one run of a Dramatiq message."""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import Interrupt, TimeLimitExceeded

from jobtrace import Outcome


def run_outcome(
    broker: Any, message: Any, exception: BaseException | None, retried: bool
) -> tuple[Outcome, bool]:
    """Return the outcome of a run and whether its exception is declared.

    ``exception`` is what ``after_process_message`` received, and
    ``retried`` is whether the same message was enqueued again during the
    run, which the Retries middleware does before this adapter's hook runs.
    A time limit or another interrupt wins over a retry, so a run that was
    cut short always carries status ERROR.
    """
    if exception is None:
        # Dramatiq calls no actor for a message that a middleware failed
        # in before_process_message without raising SkipMessage.
        return (Outcome.SKIPPED if message.failed else Outcome.SUCCESS), False
    if isinstance(exception, TimeLimitExceeded):
        return Outcome.TIMEOUT, False
    # The ShutdownNotifications middleware raises Shutdown, an Interrupt,
    # in actors that are still running when their worker stops.
    if isinstance(exception, Interrupt):
        return Outcome.INTERRUPTED, False
    if retried:
        return Outcome.RETRY, False
    return Outcome.FAILURE, _is_declared(broker, message, exception)


def _is_declared(broker: Any, message: Any, exception: BaseException) -> bool:
    # Dramatiq reads ``throws`` from the message's options first, then from
    # the actor's, and accepts a class or a tuple of classes.
    throws = message.options.get("throws")
    if not throws:
        actor = broker.actors.get(message.actor_name)
        throws = actor.options.get("throws") if actor is not None else None
    if not throws:
        return False
    try:
        return isinstance(exception, throws)
    except TypeError:
        return False
