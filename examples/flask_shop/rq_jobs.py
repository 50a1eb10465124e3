"""The shop's RQ job, and the settings module of its ``rq worker``."""

from __future__ import annotations

import os

import jobtrace_rq

#: Read by ``rq worker --config examples.flask_shop.rq_jobs`` too.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "stock"

jobtrace_rq.instrument()


def reserve_stock(order_id: str, item: str, quantity: int) -> str:
    return f"{quantity} x {item} reserved for order {order_id}"
