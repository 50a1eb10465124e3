"""Enqueue two jobs without calling jobtrace, under opentelemetry-instrument.

Usage: ``python -m tests.recipes.auto_producer HOST BROKER_URL QUEUE COUNT
SLEEP [NAMESPACE]``. It enqueues an ``add`` job and a ``make_spans`` job
by name, so it imports no job code, and prints their ids as JSON.
"""

from __future__ import annotations

import json
import sys


def enqueue_celery(url: str, queue: str, count: int, sleep: float) -> list[str]:
    from celery import Celery

    app = Celery("producer", broker=url)
    app.conf.task_default_queue = queue
    add = app.send_task("it.add", args=(1, 1))
    spans = app.send_task("it.make_spans", args=(count, sleep))
    return [add.id, spans.id]


def enqueue_rq(url: str, queue: str, count: int, sleep: float) -> list[str]:
    from redis import Redis
    from rq import Queue

    target = Queue(queue, connection=Redis.from_url(url))
    add = target.enqueue("tests.rq.jobs.add", 1, 1)
    spans = target.enqueue("tests.recipes.spans.make_spans", count, sleep)
    return [add.id, spans.id]


def enqueue_dramatiq(
    url: str, queue: str, count: int, sleep: float, namespace: str
) -> list[str]:
    import dramatiq

    from tests.dramatiq.workers import build_broker

    broker = build_broker(url, namespace)
    dramatiq.set_broker(broker)
    ids = []
    for actor, args in (("add", (1, 1)), ("make_spans", (count, sleep))):
        message = dramatiq.Message(
            queue_name=queue, actor_name=actor, args=args, kwargs={}, options={}
        )
        ids.append(broker.enqueue(message).message_id)
    return ids


def main(host: str, url: str, queue: str, count: str, sleep: str, *rest: str) -> None:
    if host == "celery":
        ids = enqueue_celery(url, queue, int(count), float(sleep))
    elif host == "rq":
        ids = enqueue_rq(url, queue, int(count), float(sleep))
    else:
        ids = enqueue_dramatiq(url, queue, int(count), float(sleep), rest[0])
    print(json.dumps(ids))


if __name__ == "__main__":
    main(*sys.argv[1:])
