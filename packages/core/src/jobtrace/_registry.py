"""A bounded map for state that lives between two hooks of one job."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

#: Entries kept per registry. A worker runs far fewer jobs at once, so only
#: jobs whose closing hook never ran (a killed thread, a lost message) are
#: evicted.
DEFAULT_MAX_ENTRIES = 10_000


class BoundedRegistry(Generic[K, V]):
    """A thread-safe insertion-ordered map that evicts its oldest entries.

    Hooks store a job's state under its id when the job starts and pop it
    when the job ends. If the ending hook never runs, the entry is evicted
    once ``max_entries`` newer ones arrive, and ``on_evict`` is called with
    it, so memory never grows with the number of jobs a worker has run.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max_entries = max_entries
        self._on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key``, evicting the oldest entry if full."""
        evicted: list[tuple[K, V]] = []
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._max_entries:
                evicted.append(self._items.popitem(last=False))
        for old_key, old_value in evicted:
            log.debug("Evicted state of job %r, its closing hook never ran", old_key)
            if self._on_evict is not None:
                self._on_evict(old_key, old_value)

    def get(self, key: K) -> V | None:
        """Return the value under ``key``, or None."""
        with self._lock:
            return self._items.get(key)

    def pop(self, key: K) -> V | None:
        """Remove and return the value under ``key``, or None."""
        with self._lock:
            return self._items.pop(key, None)

    def clear(self) -> None:
        """Remove every entry without calling ``on_evict``."""
        with self._lock:
            self._items.clear()
