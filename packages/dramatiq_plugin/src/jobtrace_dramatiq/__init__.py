"""Dramatiq adapter for jobtrace: a ``send`` span per enqueue, a ``process``
span per run, exported from every worker process.

Call :func:`instrument` once, after the module that builds the broker has
called ``dramatiq.set_broker()``, in code that both producers and workers
import. Brokers configured by name, as with django_dramatiq's
``MIDDLEWARE`` setting, list :class:`Tracing` (``"jobtrace_dramatiq.Tracing"``)
first instead.

Note:
    A worker process that is killed (SIGKILL, out of memory, or a second
    SIGTERM) loses the spans of the messages it was running and the spans it
    had not exported yet. No other process reports those runs.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

import jobtrace

if TYPE_CHECKING:
    from jobtrace_dramatiq._hooks import Tracing

__all__ = [
    "SUPPORTED_DRAMATIQ",
    "DramatiqInstrumentor",
    "Tracing",
    "instrument",
    "uninstrument",
]

log = logging.getLogger(__name__)

#: The Dramatiq releases this adapter supports, as a requirement specifier.
SUPPORTED_DRAMATIQ = "dramatiq >= 1.17"

# Brokers that instrument() added the middleware to, for uninstrument().
_brokers: weakref.WeakSet[Any] = weakref.WeakSet()


class DramatiqInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor entry point for Dramatiq.

    ``opentelemetry-instrument`` loads it through the
    ``opentelemetry_instrumentor`` entry point, before the application has
    built its broker, so :class:`Tracing` becomes one of Dramatiq's default
    middleware. Applications call :func:`instrument` instead.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED_DRAMATIQ,)

    def _instrument(self, **kwargs: Any) -> None:
        from jobtrace_dramatiq import _hooks

        _hooks.install()
        _add_to_broker(kwargs.get("broker"))
        log.info("jobtrace instrumented dramatiq %s", jobtrace.host_version("dramatiq"))

    def _uninstrument(self, **kwargs: Any) -> None:
        from jobtrace_dramatiq import _hooks

        _hooks.remove(list(_brokers))
        _brokers.clear()


def instrument(broker: Any = None) -> None:
    """Trace every message that ``broker`` enqueues or runs.

    Without ``broker``, the global broker is traced if one is set. Either
    way, every broker built later with Dramatiq's default middleware gets
    the middleware too. Calling it again does nothing to a broker that is
    already traced. With ``JOBTRACE_ENABLED=false`` it instruments nothing.

    Raises:
        RuntimeError: the installed Dramatiq is outside
            :data:`SUPPORTED_DRAMATIQ`.
    """
    jobtrace.require_host(SUPPORTED_DRAMATIQ, plugin="jobtrace-dramatiq")
    if not jobtrace.enabled():
        log.info("jobtrace is disabled, Dramatiq is not instrumented")
        return
    instrumentor = DramatiqInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(skip_dep_check=True, broker=broker)
    else:
        _add_to_broker(broker)


def uninstrument() -> None:
    """Remove what :func:`instrument` added; calling it again does nothing.

    Middleware in brokers that :func:`instrument` did not reach, such as
    brokers built from the default middleware while it was installed, stay
    in place but start no more spans. Call it while no worker of the
    instrumented brokers is running a message: the middleware is taken out
    before that run ends, so the run's context stays attached to its
    worker thread.
    """
    instrumentor = DramatiqInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def _add_to_broker(broker: Any) -> None:
    from dramatiq import broker as broker_module

    from jobtrace_dramatiq import _hooks

    target = broker if broker is not None else broker_module.global_broker
    if target is None:
        log.debug("No global Dramatiq broker yet; brokers built later are traced")
        return
    _hooks.add_to(target)
    _brokers.add(target)


def __getattr__(name: str) -> Any:
    # The middleware class imports Dramatiq, which processes that only load
    # the instrumentor entry point do not need.
    if name == "Tracing":
        from jobtrace_dramatiq._hooks import Tracing

        return Tracing
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
