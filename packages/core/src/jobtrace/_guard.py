"""Containment of jobtrace's own errors inside host hooks.

Every hook body that jobtrace runs inside a worker or producer is wrapped in
a :class:`Guard`. The guard swallows :class:`Exception`, so an error in
jobtrace never reaches the job, and reports it to :func:`report_error`,
which logs the first occurrence of each (hook, exception type) pair with its
traceback and only counts the rest.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from types import TracebackType

log = logging.getLogger(__name__)

_lock = threading.Lock()
_counts: Counter[tuple[str, str]] = Counter()


def report_error(hook: str, error: BaseException) -> None:
    """Count an internal error and log it the first time its kind appears."""
    key = (hook, qualified_name(error))
    with _lock:
        _counts[key] += 1
        first = _counts[key] == 1
    if first:
        log.warning(
            "jobtrace hook %s failed; the job is unaffected and later "
            "errors of this kind are only counted",
            hook,
            exc_info=error,
        )


def qualified_name(error: BaseException) -> str:
    """Return an exception's class as ``module.QualName``, builtins bare."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_counts() -> dict[tuple[str, str], int]:
    """Return how often each (hook, exception type) pair failed so far."""
    with _lock:
        return dict(_counts)


def reset_error_counts() -> None:
    """Forget the counted errors, so the next one is logged again."""
    with _lock:
        _counts.clear()


class Guard:
    """A reusable context manager that contains errors raised by one hook.

    Create one per hook at import time and enter it around jobtrace's own
    code only. The call into the user's function or the host's original
    method stays outside, so its result and exception pass through as they
    are. The guard keeps no per-call state, so one instance serves every
    thread at once.
    """

    __slots__ = ("hook",)

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report_error(self.hook, exc)
        return True
