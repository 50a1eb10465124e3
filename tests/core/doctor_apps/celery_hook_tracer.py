"""A Celery app module that starts a second tracer only when a worker starts."""

from celery import Celery, signals

import jobtrace_celery

jobtrace_celery.instrument()

app = Celery("doctor", broker="memory://")


@signals.worker_init.connect(weak=False)
def _start_contrib_tracer(**kwargs: object) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument()
