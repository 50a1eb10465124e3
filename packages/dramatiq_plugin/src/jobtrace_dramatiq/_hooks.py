"""The Dramatiq middleware that turns enqueues and runs into spans.

Dramatiq calls each hook of :class:`Tracing` itself, so no host method is
wrapped. Every hook runs jobtrace's code inside a :class:`jobtrace.Guard`,
so an error in jobtrace is logged once and never reaches Dramatiq, which
would log it at CRITICAL on every message.

The middleware must come first in the broker's list. Dramatiq runs
``before_*`` hooks in list order and ``after_*`` hooks in reverse order, so
the process span then opens before, and ends after, every other
middleware. The Retries, Pipelines, Callbacks and GroupCallbacks middleware
enqueue their messages while the span is current. The TimeLimit and
ShutdownNotifications middleware raise their exceptions in the actor's
thread only while their own hooks allow it, which is inside the span and
never inside this middleware's hooks.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from dramatiq.middleware import Middleware, default_middleware

import jobtrace
from jobtrace import Guard
from jobtrace_dramatiq import SUPPORTED_DRAMATIQ, _overlap, _runs, _sends

log = logging.getLogger(__name__)

# Whether this process looked for other tracers, at its first enqueue or
# when its worker started.
_overlap_checked = False


class Tracing(Middleware):
    """Dramatiq middleware that traces every message a broker enqueues or runs.

    :func:`jobtrace_dramatiq.instrument` adds it to a broker. Where the
    middleware is listed by hand, as in django_dramatiq's ``MIDDLEWARE``
    setting, list ``"jobtrace_dramatiq.Tracing"`` first, so that retries
    and the messages that other middleware enqueue happen inside the
    process span.

    Note:
        A worker process that is killed (SIGKILL, out of memory, or a
        second SIGTERM) loses the spans of the messages it was running and
        the spans it had not exported yet. The send span of an enqueue that
        raised ends at the next enqueue or run on the same thread, and an
        enqueue to a RabbitMQ server that is down gets none. See the
        Limitations section of docs/dramatiq.md.

    Raises:
        RuntimeError: the installed Dramatiq is outside the supported range.
    """

    #: Whether instances of this class start spans; see :class:`InstalledTracing`.
    switched_on: ClassVar[bool] = True

    def __init__(self) -> None:
        jobtrace.require_host(SUPPORTED_DRAMATIQ, plugin="jobtrace-dramatiq")
        self._enabled = jobtrace.enabled()

    # Hooks that start spans check switched_on. Hooks that end them run
    # while it is off too, so that a run in progress still ends and
    # detaches its context from the worker thread.

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if self._enabled and self.switched_on:
            if not _overlap_checked:
                with _OVERLAP:
                    _check_overlap()
            with _BEFORE_ENQUEUE:
                _sends.begin(message)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if self._enabled:
            with _AFTER_ENQUEUE:
                _sends.end(message)

    def before_delay_message(self, broker: Any, message: Any) -> None:
        if self._enabled and self.switched_on:
            with _DELAY:
                _sends.mark_delayed(message)

    def before_process_message(self, broker: Any, message: Any) -> None:
        if self._enabled and self.switched_on:
            with _BEFORE_PROCESS:
                _sends.fail_pending()
                _runs.begin(message)

    def after_process_message(
        self,
        broker: Any,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if self._enabled:
            with _AFTER_PROCESS:
                # A send that failed during the run, such as a retry that
                # the Retries middleware could not enqueue, ends first.
                _sends.fail_pending()
                _runs.end(broker, message, exception)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        if self._enabled:
            with _SKIP:
                _runs.skip(message, report=self.switched_on)

    def after_nack(self, broker: Any, message: Any) -> None:
        if self._enabled and self.switched_on:
            with _NACK:
                _runs.reject_unknown_actor(broker, message)

    def after_process_boot(self, broker: Any) -> None:
        if self._enabled and self.switched_on:
            with _BOOT:
                _start_worker()

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        # Workers started in-process, not by the dramatiq command, never
        # get after_process_boot.
        if self._enabled and self.switched_on:
            with _BOOT:
                _start_worker()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Export the finished spans before the wait for running actors, in
        # case the process is killed during that wait.
        if self._enabled:
            with _SHUTDOWN:
                jobtrace.flush()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # The dramatiq command's worker processes end with os._exit soon
        # after this hook, so atexit handlers never run.
        if self._enabled:
            with _SHUTDOWN:
                _runs.interrupt(worker)
                jobtrace.flush_before_exit()


class InstalledTracing(Tracing):
    """The :class:`Tracing` that :func:`install` adds and :func:`remove` stops.

    Brokers built from the default middleware while it was installed keep
    their instance, which :func:`remove` cannot reach, so the class is
    switched off instead. A :class:`Tracing` that the application listed
    itself is never switched off.
    """


def _start_worker() -> None:
    jobtrace.mark_worker()
    jobtrace.tracer()
    if not _overlap_checked:
        with _OVERLAP:
            _check_overlap()


def _check_overlap() -> None:
    global _overlap_checked
    _overlap_checked = True
    _overlap.check()


def install() -> None:
    """Switch :class:`InstalledTracing` on and make it a default middleware.

    Brokers built afterwards without an explicit middleware list get it
    first in their list.
    """
    InstalledTracing.switched_on = True
    if InstalledTracing not in default_middleware:
        default_middleware.insert(0, InstalledTracing)


def add_to(broker: Any) -> None:
    """Add a :class:`Tracing` to ``broker``, first in its list, unless it has one."""
    if any(isinstance(m, Tracing) for m in broker.middleware):
        return
    middleware = InstalledTracing()
    if broker.middleware:
        broker.add_middleware(middleware, before=type(broker.middleware[0]))
    else:
        broker.add_middleware(middleware)


def remove(brokers: Any) -> None:
    """Undo :func:`install`, and take the middleware out of ``brokers``."""
    global _overlap_checked
    InstalledTracing.switched_on = False
    _overlap_checked = False
    _overlap.reset()
    while InstalledTracing in default_middleware:
        default_middleware.remove(InstalledTracing)
    for broker in brokers:
        broker.middleware[:] = [
            m for m in broker.middleware if not isinstance(m, InstalledTracing)
        ]
    _sends.clear()


_BEFORE_ENQUEUE = Guard("dramatiq.before_enqueue")
_AFTER_ENQUEUE = Guard("dramatiq.after_enqueue")
_DELAY = Guard("dramatiq.before_delay_message")
_BEFORE_PROCESS = Guard("dramatiq.before_process_message")
_AFTER_PROCESS = Guard("dramatiq.after_process_message")
_SKIP = Guard("dramatiq.after_skip_message")
_NACK = Guard("dramatiq.after_nack")
_BOOT = Guard("dramatiq.worker_boot")
_SHUTDOWN = Guard("dramatiq.worker_shutdown")
_OVERLAP = Guard("dramatiq.check_other_tracers")
