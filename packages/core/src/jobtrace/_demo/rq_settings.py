"""Settings module and worker class for the demo's ``rq worker``.

The demo starts ``rq worker -c jobtrace._demo.rq_settings -w
jobtrace._demo.rq_settings.DemoWorker``. Importing this module instruments
RQ, as docs/rq.md describes for deployments.
"""

from __future__ import annotations

import os

from rq.worker import Worker

import jobtrace_rq

jobtrace_rq.instrument()

REDIS_URL = os.environ.get("JOBTRACE_DEMO_BROKER", "redis://127.0.0.1:6379/0")


class DemoWorker(Worker):
    """RQ's forking worker without the command listener.

    RQ reads commands such as stop-job on a redis-py pubsub thread that polls
    with ``sleep_time=60``. With redis-py 8.2 the RQ tests saw the stop of
    that thread delay a burst worker's exit by up to that minute (see
    tests/rq/worker_classes.py), and the demo sends no commands.
    """

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass
