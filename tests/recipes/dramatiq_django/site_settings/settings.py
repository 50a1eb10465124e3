"""Settings of the django_dramatiq test project.

The broker's URL, namespace and queue come from the environment.
"""

import os

SECRET_KEY = "test-only"
INSTALLED_APPS = ["django_dramatiq", "mail"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
    "OPTIONS": {
        "url": os.environ["TEST_BROKER_URL"],
        "namespace": os.environ["TEST_NAMESPACE"],
    },
    "MIDDLEWARE": [
        "jobtrace_dramatiq.Tracing",
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
