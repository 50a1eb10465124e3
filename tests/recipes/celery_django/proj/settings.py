"""Settings of the test project, with the broker and queue from the environment."""

import os

SECRET_KEY = "test-only"
INSTALLED_APPS = ["shop"]
DATABASES: dict[str, object] = {}
USE_TZ = True

CELERY_BROKER_URL = os.environ["TEST_BROKER_URL"]
CELERY_TASK_DEFAULT_QUEUE = os.environ["TEST_QUEUE"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
