"""OpenTelemetry traces for background jobs.

jobtrace turns the lifecycle of a job (enqueue, start, retry, finish) into
``send`` and ``process`` spans that follow the OpenTelemetry messaging
conventions, and exports them over OTLP from every process that runs jobs.
Host plugins (``jobtrace_celery`` and the others) translate their host's
hooks into the calls below; applications mostly use :func:`configure`,
:func:`flush` and the signals in :mod:`jobtrace.signals`.
"""

from __future__ import annotations

from jobtrace import signals
from jobtrace._carrier import header_names, private_headers, propagation_mode
from jobtrace._guard import Guard, error_counts, report_error
from jobtrace._handoff import (
    SpanPipe,
    claim_child_run,
    end_abandoned,
    open_span_pipe,
    pipe_forks,
)
from jobtrace._hosts import host_version, require_host
from jobtrace._names import Outcome
from jobtrace._provider import (
    component,
    configure,
    dropped_spans,
    enabled,
    flush,
    flush_before_exit,
    mark_worker,
    resource_attributes,
    settings,
    shutdown,
    span_processor,
    tracer,
)
from jobtrace._registry import BoundedRegistry
from jobtrace._spans import (
    Job,
    RunHandle,
    SendHandle,
    begin_report,
    begin_run,
    begin_send,
    current_job,
    end_run,
    end_send,
    record_error,
    report_run,
)
from jobtrace._tracers import OtherTracers, sentry_integration
from jobtrace._version import __version__

# No NullHandler: until the application configures logging, Python's
# last-resort handler prints jobtrace's warnings (an invalid setting, for
# example) on stderr instead of dropping them.

__all__ = [
    "BoundedRegistry",
    "Guard",
    "Job",
    "OtherTracers",
    "Outcome",
    "RunHandle",
    "SendHandle",
    "SpanPipe",
    "__version__",
    "begin_report",
    "begin_run",
    "begin_send",
    "claim_child_run",
    "component",
    "configure",
    "current_job",
    "dropped_spans",
    "enabled",
    "end_abandoned",
    "end_run",
    "end_send",
    "error_counts",
    "flush",
    "flush_before_exit",
    "header_names",
    "host_version",
    "mark_worker",
    "open_span_pipe",
    "pipe_forks",
    "private_headers",
    "propagation_mode",
    "record_error",
    "report_error",
    "report_run",
    "require_host",
    "resource_attributes",
    "sentry_integration",
    "settings",
    "shutdown",
    "signals",
    "span_processor",
    "tracer",
]
