"""Django settings for the django-rq test.

``TEST_RQ_URL`` is the Redis URL and ``TEST_RQ_QUEUE`` the test's queue.
django-rq also needs a ``default`` queue for ``django_rq.enqueue``. The
in-memory SQLite database is there for ``transaction.atomic()``, because
django-rq can hold an enqueue until the transaction commits.
"""

from __future__ import annotations

import os

SECRET_KEY = "jobtrace-tests-only"
INSTALLED_APPS = ["django_rq", "tests.rq.django_shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

TEST_RQ_QUEUE = os.environ["TEST_RQ_QUEUE"]
RQ_QUEUES = {
    "default": {"URL": os.environ["TEST_RQ_URL"]},
    TEST_RQ_QUEUE: {"URL": os.environ["TEST_RQ_URL"]},
}
