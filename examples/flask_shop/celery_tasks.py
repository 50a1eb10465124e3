"""The shop's Celery app, loaded by ``celery --app`` in the worker too."""

from __future__ import annotations

import os

from celery import Celery

import jobtrace_celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

jobtrace_celery.instrument()

app = Celery("flask_shop", broker=REDIS_URL)
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="shop.send_receipt")
def send_receipt(order_id: str) -> str:
    return f"receipt for order {order_id}"
