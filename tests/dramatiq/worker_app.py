"""Broker module that the integration tests pass to the ``dramatiq`` command.

The broker, queue and Redis side channel come from the environment, so one
module serves the Redis and the RabbitMQ tests.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, GroupCallbacks
from dramatiq.rate_limits.backends import RedisBackend

import jobtrace_dramatiq
from jobtrace import signals

from . import actors
from .workers import build_broker


@signals.job_started.connect
def _record_runner(job: object, span: Any, **kwargs: object) -> None:
    """Tag each run with the process and thread that ran it."""
    span.set_attribute("test.pid", os.getpid())
    span.set_attribute("test.thread", threading.get_ident())


# The double instrumentation test runs Sentry's Dramatiq integration beside
# jobtrace. Sentry adds its middleware to brokers built after its init.
if "sentry" in os.environ.get("TEST_OTHER_TRACERS", "").split(","):
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    sentry_sdk.init(
        dsn=os.environ["TEST_SENTRY_DSN"],
        traces_sample_rate=1.0,
        integrations=[DramatiqIntegration()],
    )
# The ddtrace test runs Datadog's Dramatiq integration beside jobtrace.
if "ddtrace" in os.environ.get("TEST_OTHER_TRACERS", "").split(","):
    import ddtrace

    ddtrace.patch(dramatiq=True)

broker = build_broker(os.environ["TEST_BROKER_URL"], os.environ["TEST_NAMESPACE"])
broker.add_middleware(CurrentMessage())
broker.add_middleware(GroupCallbacks(RedisBackend(url=os.environ["TEST_REDIS_URL"])))
dramatiq.set_broker(broker)

# The auto-instrumentation test leaves this to opentelemetry-instrument.
if os.environ.get("TEST_INSTRUMENT", "1") == "1":
    jobtrace_dramatiq.instrument()

declared = actors.declare(broker, os.environ["TEST_QUEUE"])
