"""Attribute names and outcomes that jobtrace writes on spans."""

from __future__ import annotations

import enum

MESSAGING_SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION_NAME = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"

JOB_NAME = "jobtrace.job.name"
JOB_ATTEMPT = "jobtrace.job.attempt"
JOB_QUEUE_TIME = "jobtrace.job.queue_time"
JOB_OUTCOME = "jobtrace.job.outcome"
#: Set on a link: ``send`` for the link to the send span, ``previous_attempt``
#: for the link from a retry to the attempt before it.
LINK_TYPE = "jobtrace.link.type"
#: Set on the span of a job that a worker's parent process reported, because
#: the process that ran the job died before it could.
REPORTED_BY_PARENT = "jobtrace.job.reported_by_parent"
#: Set on a span that a child process started and its parent ended, because
#: the child exited first.
ENDED_BY_PARENT = "jobtrace.span.ended_by_parent"

#: Set on an exported span whose descendants lost spans to the span budget:
#: how many dropped spans had this span as their closest kept ancestor.
PRUNED_SPANS = "jobtrace.pruned_spans"
#: A summary of those dropped spans, as three arrays of the same length:
#: each span name, how many spans of that name were dropped, and their
#: total duration in seconds. Longest total first.
PRUNED_NAMES = "jobtrace.pruned.names"
PRUNED_COUNTS = "jobtrace.pruned.counts"
PRUNED_DURATIONS = "jobtrace.pruned.durations"
#: Set on the local root of a trace while a span budget is on: the spans of
#: the local trace that ended before the root, the root included, how many
#: of them were exported, and how many were dropped.
TRACE_SPANS_CREATED = "jobtrace.trace.spans_created"
TRACE_SPANS_EXPORTED = "jobtrace.trace.spans_exported"
TRACE_SPANS_DROPPED = "jobtrace.trace.spans_dropped"
#: Set on the ``jobtrace.spans.dropped`` metric: ``budget`` for spans that
#: did not fit in their local trace's budget, ``late`` for spans that ended
#: after their local root and did not fit or had lost their parent.
DROP_REASON = "jobtrace.drop_reason"

#: Keys that jobtrace adds to a job's message headers, beside W3C trace
#: context. Values are strings.
SENT_AT_HEADER = "jobtrace_sent_at"
PROPAGATION_HEADER = "jobtrace_propagation"
PREVIOUS_ATTEMPT_HEADER = "jobtrace_previous_attempt"


class Outcome(str, enum.Enum):
    """The outcome of one run of a job, as written to ``jobtrace.job.outcome``."""

    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"
    REVOKED = "revoked"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    KILLED = "killed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"

    @property
    def is_error(self) -> bool:
        """Whether a run with this outcome gets span status ERROR."""
        return self in _ERROR_OUTCOMES


_ERROR_OUTCOMES = frozenset(
    {
        Outcome.FAILURE,
        Outcome.REJECTED,
        Outcome.TIMEOUT,
        Outcome.KILLED,
        Outcome.INTERRUPTED,
    }
)
