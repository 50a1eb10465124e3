"""A Celery app module traced by jobtrace and by the contrib instrumentation."""

from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor

import jobtrace_celery

jobtrace_celery.instrument()
CeleryInstrumentor().instrument()

app = Celery("doctor", broker="memory://")
