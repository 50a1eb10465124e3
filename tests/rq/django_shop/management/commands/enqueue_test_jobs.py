"""``python -m django enqueue_test_jobs``: the producer side of the test."""

from __future__ import annotations

import json
import uuid
from typing import Any

import django_rq
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

import jobtrace
from tests.rq import jobs
from tests.rq.django_shop import tasks


class Command(BaseCommand):
    help = "Enqueue a job in each way django-rq offers and print the job ids."

    def handle(self, *args: Any, **options: Any) -> None:
        queue = django_rq.get_queue(settings.TEST_RQ_QUEUE)
        # The span plays the part of a web request that enqueues jobs.
        with jobtrace.tracer().start_as_current_span("request") as request:
            ids = {
                "enqueue": django_rq.enqueue(jobs.add, 1, 2).id,
                "get_queue": queue.enqueue(jobs.add, 3, 4).id,
                "delay": tasks.multiply.delay(5, 6).id,
                # django-rq 4.2 delays this enqueue until the transaction
                # commits (COMMIT_MODE on_db_commit) and returns None, so
                # the job id is set here. Up to 3.2 it enqueues at once.
                "atomic": f"atomic-{uuid.uuid4().hex}",
            }
            with transaction.atomic():
                queue.enqueue(jobs.add, 7, 8, job_id=ids["atomic"])
        context = request.get_span_context()
        ids["request_span_id"] = format(context.span_id, "016x")
        self.stdout.write(json.dumps(ids))
