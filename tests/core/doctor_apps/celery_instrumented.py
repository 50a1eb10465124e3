"""A Celery app module that calls jobtrace_celery.instrument()."""

from celery import Celery

import jobtrace_celery

jobtrace_celery.instrument()

app = Celery("doctor", broker="memory://")
