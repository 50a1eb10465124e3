"""Settings module that the integration tests pass to ``rq worker -c``.

Importing it instruments RQ, which is how a deployment turns jobtrace on for
``rq worker`` without touching job code.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jobtrace_rq
from jobtrace import signals

from .worker_classes import WithoutCommandListener

# RQ sets up only its own logger, and jobtrace's package logger has just a
# NullHandler, so jobtrace's warnings reach stderr only through this one.
_stderr = logging.StreamHandler()
_stderr.setLevel(logging.WARNING)
_stderr.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
logging.getLogger("jobtrace").addHandler(_stderr)

# The double instrumentation test runs Sentry's RQ integration beside jobtrace.
if "sentry" in os.environ.get("TEST_OTHER_TRACERS", "").split(","):
    import sentry_sdk
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=os.environ["TEST_SENTRY_DSN"],
        traces_sample_rate=1.0,
        integrations=[RqIntegration()],
    )
# The ddtrace test runs Datadog's RQ integration beside jobtrace.
if "ddtrace" in os.environ.get("TEST_OTHER_TRACERS", "").split(","):
    import ddtrace

    ddtrace.patch(rq=True)

# The auto-instrumentation test leaves this to opentelemetry-instrument.
if os.environ.get("TEST_INSTRUMENT", "1") == "1":
    jobtrace_rq.instrument()


@signals.job_started.connect
def _record_pid(job: object, span: Any, **kwargs: object) -> None:
    """Tag each run with the pid of the process that ran it."""
    span.set_attribute("test.pid", os.getpid())


try:
    from rq.worker import SpawnWorker
except ImportError:  # RQ before 2.0 has no SpawnWorker.
    from rq.worker import Worker as SpawnWorker


class SpawningWorker(WithoutCommandListener, SpawnWorker):  # type: ignore[misc,valid-type]
    """A SpawnWorker whose work horses import this module, and so jobtrace.

    A spawned work horse is a new interpreter that loads only the worker
    class, never the ``-c`` settings module.
    """
