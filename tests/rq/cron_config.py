"""Cron configuration that the cron test passes to ``rq cron``.

``rq cron`` imports this module, so the ``instrument()`` call here turns
jobtrace on in the cron scheduler process. ``TEST_CRON_QUEUE`` names the
queue of the test's jobs.
"""

from __future__ import annotations

import os

from rq import cron

import jobtrace_rq

from . import jobs

jobtrace_rq.instrument()

cron.register(
    jobs.add, queue_name=os.environ["TEST_CRON_QUEUE"], args=(1, 2), interval=1
)
