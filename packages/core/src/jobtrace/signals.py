"""Job lifecycle signals, one vocabulary for every host.

Each signal is a :mod:`blinker` signal whose sender is the
:class:`~jobtrace.Job`. Receivers get keyword arguments:

- ``job_enqueued``: ``span``, the send span, still open.
- ``job_started``: ``span``, the process span, already the current span, so
  a receiver can add attributes to it.
- ``job_retried``: ``span`` and ``error``, the reason for the retry.
- ``job_finished``: ``span``, ``outcome`` (an :class:`~jobtrace.Outcome`)
  and ``error`` (the exception or None), before the span ends.

A receiver that raises is logged once per kind and never affects the job.
"""

from __future__ import annotations

import blinker

_namespace = blinker.Namespace()

job_enqueued = _namespace.signal("job-enqueued")
job_started = _namespace.signal("job-started")
job_retried = _namespace.signal("job-retried")
job_finished = _namespace.signal("job-finished")

__all__ = ["job_enqueued", "job_finished", "job_retried", "job_started"]
