"""The project's Celery app, whose import instruments Celery."""

import os

from celery import Celery

import jobtrace_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
jobtrace_celery.instrument()

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
