"""RQ adapter for jobtrace: a ``send`` span per enqueue, a ``process`` span
per run, exported from every worker and work horse.

Call :func:`instrument` once in a module that both the producer and the
worker import, such as the module that defines the jobs, or in the settings
module that ``rq worker -c`` loads.

Note:
    The forking ``Worker`` runs each job in a work horse that ends with
    ``os._exit``, so the horse flushes its spans before it exits. That flush
    delays the next job by the export time, and by at most
    ``JOBTRACE_FLUSH_TIMEOUT`` seconds when the collector does not respond.
    A horse that dies is reported by the worker with outcome ``killed``,
    ``timeout`` or ``interrupted``, but spans of the job's own code that the
    horse had not exported yet are lost.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

import jobtrace

__all__ = ["SUPPORTED_RQ", "RQInstrumentor", "instrument", "uninstrument"]

log = logging.getLogger(__name__)

#: The RQ releases this adapter supports, as a requirement specifier.
SUPPORTED_RQ = "rq >= 1.16"


class RQInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor entry point for RQ.

    ``opentelemetry-instrument`` loads it through the
    ``opentelemetry_instrumentor`` entry point; applications call
    :func:`instrument` instead.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED_RQ,)

    def _instrument(self, **kwargs: Any) -> None:
        from jobtrace_rq import _hooks

        _hooks.install()
        log.info("jobtrace instrumented rq %s", jobtrace.host_version("rq"))

    def _uninstrument(self, **kwargs: Any) -> None:
        from jobtrace_rq import _hooks

        _hooks.remove()


def instrument() -> None:
    """Trace every RQ job enqueued or run in this process.

    Calling it again does nothing. With ``JOBTRACE_ENABLED=false`` it
    instruments nothing.

    Raises:
        RuntimeError: the installed RQ is outside :data:`SUPPORTED_RQ`.
    """
    jobtrace.require_host(SUPPORTED_RQ, plugin="jobtrace-rq")
    if not jobtrace.enabled():
        log.info("jobtrace is disabled, RQ is not instrumented")
        return
    instrumentor = RQInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(skip_dep_check=True)


def uninstrument() -> None:
    """Remove what :func:`instrument` added; calling it again does nothing."""
    instrumentor = RQInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
