"""The shop's web app: ``POST /orders`` enqueues one job on each host."""

from __future__ import annotations

import uuid

from flask import Flask, Response, jsonify, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from redis import Redis
from rq import Queue

import jobtrace
from examples.flask_shop import celery_tasks, dramatiq_actors, rq_jobs

# Build the tracer provider now, so that the Flask request spans are
# recorded and the send spans become their children. The resource of
# every span of this process gets jobtrace.component=web.
jobtrace.configure(component="web")

app = Flask(__name__)
FlaskInstrumentor().instrument_app(app)
stock_queue = Queue(rq_jobs.QUEUE, connection=Redis.from_url(rq_jobs.REDIS_URL))


@app.post("/orders")
def create_order() -> tuple[Response, int]:
    order = request.get_json()
    order_id = uuid.uuid4().hex[:8]

    receipt = celery_tasks.send_receipt.delay(order_id)
    reservation = stock_queue.enqueue(
        rq_jobs.reserve_stock, order_id, order["item"], order["quantity"]
    )
    notice = dramatiq_actors.notify_warehouse.send(order_id)

    jobs = {
        "celery": receipt.id,
        "rq": reservation.id,
        "dramatiq": notice.message_id,
    }
    return jsonify(order_id=order_id, jobs=jobs), 202
