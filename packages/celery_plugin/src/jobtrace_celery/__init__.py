"""Celery adapter for jobtrace: a ``send`` span per enqueue, a ``process``
span per task run, exported from every worker process.

Call :func:`instrument` once in the module that creates the Celery app. The
same line instruments producers (web processes, beat) and workers.

Note:
    The pool children of a prefork worker export their spans when the child
    exits and at the batch processor's interval. A child killed with SIGKILL
    loses the spans it had not exported yet; the parent still reports the
    killed job's own span with outcome ``killed``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

import jobtrace

__all__ = ["SUPPORTED_CELERY", "CeleryInstrumentor", "instrument", "uninstrument"]

log = logging.getLogger(__name__)

#: The Celery releases this adapter supports, as a requirement specifier.
SUPPORTED_CELERY = "celery >= 5.3, < 6"


class CeleryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor entry point for Celery.

    ``opentelemetry-instrument`` loads it through the
    ``opentelemetry_instrumentor`` entry point; applications call
    :func:`instrument` instead.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED_CELERY,)

    def _instrument(self, **kwargs: Any) -> None:
        from jobtrace_celery import _hooks

        _hooks.connect()
        log.info("jobtrace instrumented celery %s", jobtrace.host_version("celery"))

    def _uninstrument(self, **kwargs: Any) -> None:
        from jobtrace_celery import _hooks

        _hooks.disconnect()


def instrument() -> None:
    """Trace every Celery task enqueued or run in this process.

    Calling it again does nothing. With ``JOBTRACE_ENABLED=false`` it
    instruments nothing.

    Raises:
        RuntimeError: the installed Celery is outside :data:`SUPPORTED_CELERY`.
    """
    jobtrace.require_host(SUPPORTED_CELERY, plugin="jobtrace-celery")
    if not jobtrace.enabled():
        log.info("jobtrace is disabled, Celery is not instrumented")
        return
    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(skip_dep_check=True)


def uninstrument() -> None:
    """Remove what :func:`instrument` added; calling it again does nothing."""
    instrumentor = CeleryInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
