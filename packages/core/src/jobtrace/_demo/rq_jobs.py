"""The demo's RQ jobs, imported by the demo and by its ``rq worker``."""

from __future__ import annotations

import time


def add(x: int, y: int) -> int:
    time.sleep(0.01)
    return x + y


def fail() -> None:
    raise ValueError("card declined")


def flaky() -> str:
    """Fail on the first attempt and succeed on the retry.

    The demo enqueues this job with ``Retry(max=1)``, so ``retries_left`` is
    1 on the first attempt and 0 on the second.
    """
    from rq import get_current_job

    job = get_current_job()
    if job is not None and job.retries_left:
        raise ConnectionError("payment service busy")
    return "paid"
