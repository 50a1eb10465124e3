"""Tests for the guard that contains jobtrace's own errors."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from jobtrace._guard import Guard, error_counts, report_error, reset_error_counts


@pytest.fixture(autouse=True)
def capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Capture jobtrace's warnings even if an earlier test raised the root level.

    The in-process Celery worker tests leave the root logger at ERROR.
    """
    caplog.set_level(logging.WARNING, logger="jobtrace")


@pytest.fixture(autouse=True)
def clean_counts() -> Iterator[None]:
    """Start and end every test with no counted errors."""
    reset_error_counts()
    yield
    reset_error_counts()


def guard_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the records that the guard module wrote."""
    return [record for record in caplog.records if record.name == "jobtrace._guard"]


def raise_and_catch(error: BaseException) -> BaseException:
    """Raise ``error`` and return it, so it carries a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


def test_guard_swallows_exception(caplog: pytest.LogCaptureFixture) -> None:
    """An Exception inside the guard is swallowed, counted and logged."""
    guard = Guard("enqueue")

    with guard:
        raise ValueError("broken hook")

    records = guard_records(caplog)
    assert error_counts() == {("enqueue", "ValueError"): 1}
    assert len(records) == 1
    assert "enqueue" in records[0].getMessage()


def test_guard_without_error() -> None:
    """A body that does not raise runs to the end and is not counted."""
    ran = []

    with Guard("start"):
        ran.append(True)

    assert ran == [True]
    assert error_counts() == {}


def test_guard_exit_return_values() -> None:
    """__exit__ returns True only for an Exception, so only that is suppressed."""
    guard = Guard("finish")

    assert guard.__exit__(None, None, None) is False
    assert guard.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None) is False
    assert guard.__exit__(ValueError, ValueError(), None) is True


@pytest.mark.parametrize(
    "error_type",
    [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError],
)
def test_guard_passes_base_exception(error_type: type[BaseException]) -> None:
    """BaseException subclasses that are not Exception pass through uncounted."""
    with pytest.raises(error_type):
        with Guard("start"):
            raise error_type()

    assert error_counts() == {}


def test_guard_is_reusable() -> None:
    """One guard instance contains errors on every entry."""
    guard = Guard("finish")

    for _ in range(3):
        with guard:
            raise RuntimeError("again")

    assert error_counts() == {("finish", "RuntimeError"): 3}


def test_guard_has_no_instance_dict() -> None:
    """The guard has only its hook slot, so it keeps no per-call state."""
    guard = Guard("start")

    assert not hasattr(guard, "__dict__")
    assert guard.hook == "start"


def test_report_error_logs_first(caplog: pytest.LogCaptureFixture) -> None:
    """The first error of a kind is logged at WARNING with its traceback."""
    error = raise_and_catch(ValueError("first"))

    report_error("start", error)

    records = guard_records(caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is error
    assert records[0].exc_info[2] is error.__traceback__
    assert "start" in records[0].getMessage()


def test_report_error_counts_repeats(caplog: pytest.LogCaptureFixture) -> None:
    """Later errors of the same (hook, type) are counted but not logged."""
    for index in range(5):
        report_error("start", ValueError(index))

    assert len(guard_records(caplog)) == 1
    assert error_counts() == {("start", "ValueError"): 5}


def test_report_error_keys(caplog: pytest.LogCaptureFixture) -> None:
    """A new hook or a new exception type is logged again on its first error."""
    report_error("start", ValueError("a"))
    report_error("start", KeyError("b"))
    report_error("finish", ValueError("c"))
    report_error("finish", ValueError("d"))

    assert len(guard_records(caplog)) == 3
    assert error_counts() == {
        ("start", "ValueError"): 1,
        ("start", "KeyError"): 1,
        ("finish", "ValueError"): 2,
    }


def test_report_error_nested_class() -> None:
    """The counter keys a nested exception class by its qualified name."""

    class Outer:
        class Failure(Exception):
            pass

    report_error("start", Outer.Failure())

    assert list(error_counts()) == [
        (
            "start",
            "tests.core.test_guard.test_report_error_nested_class.<locals>.Outer.Failure",
        )
    ]


def test_report_error_same_name(caplog: pytest.LogCaptureFixture) -> None:
    """Exception types that share a name but not a module are logged apart."""
    first = type("ConnectionError", (Exception,), {"__module__": "requests"})

    report_error("enqueue", first())
    report_error("enqueue", ConnectionError())

    assert len(guard_records(caplog)) == 2


def test_error_counts_is_a_copy() -> None:
    """Changing the returned dict does not change the counter."""
    report_error("start", ValueError())

    counts = error_counts()
    counts.clear()

    assert error_counts() == {("start", "ValueError"): 1}


def test_reset_logs_again(caplog: pytest.LogCaptureFixture) -> None:
    """After reset_error_counts, the next error of a known kind is logged."""
    report_error("start", ValueError())
    reset_error_counts()
    report_error("start", ValueError())

    assert len(guard_records(caplog)) == 2
    assert error_counts() == {("start", "ValueError"): 1}


def test_report_error_threads(caplog: pytest.LogCaptureFixture) -> None:
    """Concurrent reports of one kind are all counted and logged once."""
    threads_count, reports_per_thread = 8, 200
    barrier = threading.Barrier(threads_count)

    def report_many() -> None:
        barrier.wait()
        for _ in range(reports_per_thread):
            report_error("finish", RuntimeError())

    threads = [threading.Thread(target=report_many) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = threads_count * reports_per_thread
    assert error_counts() == {("finish", "RuntimeError"): expected}
    assert len(guard_records(caplog)) == 1
