"""The demo's Celery app and tasks; the broker URL comes from the demo."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chain

import jobtrace_celery

jobtrace_celery.instrument()

app = Celery("jobtrace_demo")
app.conf.update(
    broker_url=os.environ.get("JOBTRACE_DEMO_BROKER", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("JOBTRACE_DEMO_BROKER", "redis://127.0.0.1:6379/0"),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="demo.add")
def add(x: int, y: int) -> int:
    time.sleep(0.01)
    return x + y


@app.task(name="demo.fail")
def fail() -> None:
    raise ValueError("card declined")


@app.task(name="demo.flaky", bind=True, max_retries=3, default_retry_delay=0)
def flaky(self: Any) -> str:
    if self.request.retries < 1:
        raise self.retry(exc=ConnectionError("payment service busy"), countdown=0)
    return "paid"


@app.task(name="demo.fan_out")
def fan_out(count: int) -> int:
    for number in range(count):
        add.delay(number, 1)
    return count


def chain_of_three() -> Any:
    """Enqueue add(1, 2) | add(3) | add(4): the worker enqueues steps 2 and 3."""
    return chain(add.s(1, 2), add.s(3), add.s(4)).delay()
