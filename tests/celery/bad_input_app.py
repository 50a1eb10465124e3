"""Celery app for the bad-input tests: worker_app's app plus failing tasks.

Importing worker_app instruments Celery and builds the app from the
environment, so this module runs with the same settings as worker_app.
"""

from __future__ import annotations

import os

from worker_app import app

__all__ = ["DeclaredError", "UnprintableError", "app"]


class UnprintableError(Exception):
    """An exception whose ``str()`` raises, as a buggy library's may."""

    def __str__(self) -> str:
        raise RuntimeError("UnprintableError.__str__ failed")


class DeclaredError(Exception):
    """An exception that a task declares as a single class in ``throws``."""


@app.task(name="bad.unprintable")
def raise_unprintable() -> None:
    raise UnprintableError("unprintable")


# Celery checks isinstance(exc, task.throws), which accepts one class as well
# as a tuple of classes.
@app.task(name="bad.declared", throws=DeclaredError)
def raise_declared() -> None:
    raise DeclaredError("declared")


@app.task(name="bad.pid")
def report_pid() -> int:
    return os.getpid()
