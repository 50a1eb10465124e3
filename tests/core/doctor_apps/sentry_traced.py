"""Celery and RQ traced by jobtrace and by sentry-sdk's integrations.

The DSN names a closed port on 127.0.0.1, and no event is captured, so
Sentry sends nothing.
"""

import sentry_sdk
from celery import Celery
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.rq import RqIntegration

import jobtrace_celery
import jobtrace_rq

jobtrace_celery.instrument()
jobtrace_rq.instrument()
sentry_sdk.init(
    dsn="http://public@127.0.0.1:9/1",
    integrations=[CeleryIntegration(), RqIntegration()],
    auto_enabling_integrations=False,
)

app = Celery("doctor", broker="memory://")
