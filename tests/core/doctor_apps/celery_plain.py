"""A Celery app module that does not call instrument()."""

from celery import Celery

app = Celery("doctor", broker="memory://")
