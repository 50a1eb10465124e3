"""Wall time per part of a benchmark run, for choosing its rounds and sizes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks._report import Table


@dataclasses.dataclass
class Part:
    """The runs of one part of a run, and their wall and measured seconds."""

    runs: int = 0
    seconds: float = 0.0
    measured: float = 0.0


class Stopwatch:
    """Wall time per part of a run, split into measured time and the rest.

    For a worker, the measured time is the time between its markers, and
    the rest is enqueueing the round, start-up, shutdown and the wait for
    telemetry. For a producer, it is the timed enqueues.
    """

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}

    @contextmanager
    def timing(self, part: str) -> Iterator[Part]:
        """Add the wall time of the block to ``part``, and count one run.

        The block adds its measured seconds to the yielded object's
        ``measured``.
        """
        entry = self._parts.setdefault(part, Part())
        started = time.monotonic()
        try:
            yield entry
        finally:
            entry.seconds += time.monotonic() - started
            entry.runs += 1

    def table(self) -> Table:
        """Return the time per part, in seconds, with a total row."""
        headers = ("Part", "Runs", "Wall s", "Measured s", "Rest s per run")
        rows: list[tuple[str, ...]] = [
            (
                name,
                f"{part.runs:,}",
                f"{part.seconds:,.1f}",
                f"{part.measured:,.1f}",
                f"{(part.seconds - part.measured) / part.runs:,.2f}",
            )
            for name, part in self._parts.items()
        ]
        total = sum(part.seconds for part in self._parts.values())
        measured = sum(part.measured for part in self._parts.values())
        rows.append(("total", "", f"{total:,.1f}", f"{measured:,.1f}", ""))
        return Table("Wall time of this run", headers, rows)
