"""A Celery app module that starts a span at import, before any worker."""

from celery import Celery

import jobtrace
import jobtrace_celery

jobtrace_celery.instrument()

app = Celery("doctor", broker="memory://")
with jobtrace.tracer().start_as_current_span("import-time work"):
    pass
