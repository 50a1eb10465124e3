"""Broker module and actors for the demo's ``dramatiq`` worker.

The demo starts ``dramatiq jobtrace._demo.dramatiq_actors`` and sends to the
same actors from its own process. Importing this module builds the broker
and instruments it, as docs/dramatiq.md describes for deployments.
"""

from __future__ import annotations

import logging
import os
import time

import dramatiq
import dramatiq.middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

import jobtrace_dramatiq

QUEUE = "jobtrace-demo-dramatiq"

# The failing actor's traceback is on purpose, and the trees show its error.
logging.getLogger("dramatiq").setLevel(logging.CRITICAL)

# Dramatiq 1.17 lists Prometheus by default. Its HTTP server would listen on
# 0.0.0.0:9191, so the demo leaves it out.
_defaults = dramatiq.middleware.default_middleware
broker = RedisBroker(
    url=os.environ.get("JOBTRACE_DEMO_BROKER", "redis://127.0.0.1:6379/0"),
    middleware=[m() for m in _defaults if m.__name__ != "Prometheus"],
)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
jobtrace_dramatiq.instrument()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def add(x: int, y: int) -> None:
    time.sleep(0.01)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def fail() -> None:
    raise ValueError("card declined")


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=100, max_backoff=200)
def flaky() -> None:
    """Fail on the first attempt, so the Retries middleware runs it again."""
    message = CurrentMessage.get_current_message()
    if message is not None and not message.options.get("retries"):
        raise ConnectionError("invoice service busy")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def double(x: int) -> int:
    return 2 * x
