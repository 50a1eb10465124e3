"""A job declared with django-rq's ``@job`` decorator."""

from __future__ import annotations

import django_rq
from django.conf import settings


@django_rq.job(settings.TEST_RQ_QUEUE)
def multiply(x: int, y: int) -> int:
    """Return the product, for ``multiply.delay``."""
    return x * y
