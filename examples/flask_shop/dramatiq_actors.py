"""The shop's Dramatiq broker and actor, loaded by ``dramatiq`` too."""

from __future__ import annotations

import os

import dramatiq
import dramatiq.middleware
from dramatiq.brokers.redis import RedisBroker

import jobtrace_dramatiq

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "warehouse"

# Dramatiq 1.17 lists Prometheus among its default middleware, and its
# HTTP server would listen on 0.0.0.0:9191.
_middleware = [
    middleware()
    for middleware in dramatiq.middleware.default_middleware
    if middleware.__name__ != "Prometheus"
]
broker = RedisBroker(url=REDIS_URL, middleware=_middleware)
dramatiq.set_broker(broker)
jobtrace_dramatiq.instrument()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def notify_warehouse(order_id: str) -> None:
    pass
