"""Tests for the bounded map that keeps job state between two hooks."""

from __future__ import annotations

import threading

import pytest

from jobtrace._registry import DEFAULT_MAX_ENTRIES, BoundedRegistry


class EvictionLog:
    """An ``on_evict`` callback that stores every (key, value) it gets."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, key: str, value: int) -> None:
        with self._lock:
            self.entries.append((key, value))


def test_put_get_pop() -> None:
    """A stored value can be read, then popped once."""
    registry: BoundedRegistry[str, int] = BoundedRegistry()

    registry.put("job-1", 1)

    assert registry.get("job-1") == 1
    assert len(registry) == 1
    assert registry.pop("job-1") == 1
    assert registry.pop("job-1") is None
    assert len(registry) == 0


def test_missing_key() -> None:
    """get and pop return None for a key that was never stored."""
    registry: BoundedRegistry[str, int] = BoundedRegistry()

    assert registry.get("unknown") is None
    assert registry.pop("unknown") is None


def test_put_replaces_value() -> None:
    """Storing under an existing key replaces the value without growing."""
    registry: BoundedRegistry[str, int] = BoundedRegistry()

    registry.put("job-1", 1)
    registry.put("job-1", 2)

    assert registry.get("job-1") == 2
    assert len(registry) == 1


def test_default_max_entries() -> None:
    """The default registry keeps 10,000 entries before it evicts."""
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(on_evict=evictions)

    for index in range(DEFAULT_MAX_ENTRIES):
        registry.put(str(index), index)
    full_length = len(registry)
    registry.put("one-more", -1)

    assert DEFAULT_MAX_ENTRIES == 10_000
    assert full_length == DEFAULT_MAX_ENTRIES
    assert len(registry) == DEFAULT_MAX_ENTRIES
    assert evictions.entries == [("0", 0)]


def test_evicts_oldest_first() -> None:
    """When full, the oldest entries are evicted in insertion order."""
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(2, on_evict=evictions)

    for index, key in enumerate("abcd"):
        registry.put(key, index)

    assert evictions.entries == [("a", 0), ("b", 1)]
    assert registry.get("a") is None
    assert registry.get("c") == 2
    assert registry.get("d") == 3
    assert len(registry) == 2


def test_put_again_refreshes_order() -> None:
    """Storing an existing key again makes it the newest entry."""
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(2, on_evict=evictions)

    registry.put("a", 1)
    registry.put("b", 2)
    registry.put("a", 3)
    registry.put("c", 4)

    assert evictions.entries == [("b", 2)]
    assert registry.get("a") == 3


def test_get_keeps_order() -> None:
    """Reading an entry does not protect it from eviction."""
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(2, on_evict=evictions)

    registry.put("a", 1)
    registry.put("b", 2)
    registry.get("a")
    registry.put("c", 3)

    assert evictions.entries == [("a", 1)]


def test_popped_entry_not_evicted() -> None:
    """An entry popped by its closing hook is never passed to on_evict."""
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(1, on_evict=evictions)

    registry.put("a", 1)
    registry.pop("a")
    registry.put("b", 2)

    assert evictions.entries == []
    assert len(registry) == 1


def test_evict_without_callback() -> None:
    """A registry without on_evict drops its oldest entry silently."""
    registry: BoundedRegistry[str, int] = BoundedRegistry(1)

    registry.put("a", 1)
    registry.put("b", 2)

    assert registry.get("a") is None
    assert registry.get("b") == 2


def test_on_evict_runs_unlocked() -> None:
    """on_evict may use the registry, because it runs outside the lock."""
    seen: list[int | None] = []
    registry: BoundedRegistry[str, int] = BoundedRegistry(
        1, on_evict=lambda key, value: seen.append(registry.get("b"))
    )

    registry.put("a", 1)
    registry.put("b", 2)

    assert seen == [2]


def test_clear_skips_on_evict() -> None:
    """clear removes every entry without calling on_evict."""
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(5, on_evict=evictions)
    registry.put("a", 1)
    registry.put("b", 2)

    registry.clear()

    assert len(registry) == 0
    assert evictions.entries == []


@pytest.mark.parametrize("max_entries", [0, -1])
def test_max_entries_validation(max_entries: int) -> None:
    """A max_entries below 1 raises ValueError naming the value."""
    with pytest.raises(ValueError, match=f"got {max_entries}"):
        BoundedRegistry(max_entries)


def test_max_entries_one() -> None:
    """The smallest valid registry keeps exactly one entry."""
    registry: BoundedRegistry[str, int] = BoundedRegistry(1)

    registry.put("a", 1)

    assert len(registry) == 1


def test_threads_smoke() -> None:
    """Concurrent puts and pops keep the bound and evict each entry at most once."""
    threads_count, puts_per_thread, max_entries = 8, 2_000, 50
    evictions = EvictionLog()
    registry: BoundedRegistry[str, int] = BoundedRegistry(
        max_entries, on_evict=evictions
    )
    popped: list[str] = []
    popped_lock = threading.Lock()
    barrier = threading.Barrier(threads_count)

    def work(thread_index: int) -> None:
        barrier.wait()
        for index in range(puts_per_thread):
            key = f"{thread_index}-{index}"
            registry.put(key, index)
            # Pop every third job, as its closing hook would.
            if index % 3 == 0 and registry.pop(key) is not None:
                with popped_lock:
                    popped.append(key)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    evicted_keys = [key for key, _ in evictions.entries]
    total_puts = threads_count * puts_per_thread
    assert len(registry) == max_entries
    assert len(evicted_keys) == len(set(evicted_keys))
    assert set(evicted_keys).isdisjoint(popped)
    assert len(popped) + len(evicted_keys) + len(registry) == total_puts
