"""Measured rounds and their summaries.

Each round runs every setup once, close together in time, so overheads are
computed per round against that round's uninstrumented run and only then
summarised. Pairing them this way cancels much of the slow drift in
machine load between rounds.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

#: The setup key of the uninstrumented run that overheads are measured against.
BASELINE = "none"


@dataclasses.dataclass(frozen=True)
class WorkerSample:
    """One worker draining ``jobs`` no-op jobs that were enqueued beforehand.

    ``seconds`` and ``cpu_seconds`` run from the first job to the end of the
    last one, including a final flush of the setup's exporter. CPU is user
    plus system time of the worker's whole process tree. ``delivered`` is the
    share of jobs whose span or transaction reached the sink, None for the
    uninstrumented setup.
    """

    host: str
    worker: str
    setup: str
    round: int
    jobs: int
    seconds: float
    cpu_seconds: float
    delivered: float | None

    @property
    def throughput(self) -> float:
        """Jobs per second."""
        return self.jobs / self.seconds

    @property
    def cpu_us_per_job(self) -> float:
        """Worker CPU time per job, in microseconds."""
        return self.cpu_seconds / self.jobs * 1e6


@dataclasses.dataclass(frozen=True)
class ProducerSample:
    """One process enqueueing ``calls`` jobs, timed with a final flush."""

    host: str
    setup: str
    round: int
    calls: int
    wall_seconds: float
    cpu_seconds: float
    delivered: float | None

    @property
    def wall_us_per_call(self) -> float:
        """Wall time per enqueue, in microseconds."""
        return self.wall_seconds / self.calls * 1e6

    @property
    def cpu_us_per_call(self) -> float:
        """Process CPU time per enqueue, in microseconds."""
        return self.cpu_seconds / self.calls * 1e6


@dataclasses.dataclass(frozen=True)
class Spread:
    """The median of several rounds, with their minimum and maximum."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Summarise ``values``, which must not be empty."""
        if not values:
            raise ValueError("no values to summarise")
        return cls(statistics.median(values), min(values), max(values))


class _Measured(Protocol):
    @property
    def setup(self) -> str: ...

    @property
    def round(self) -> int: ...


SampleT = TypeVar("SampleT", bound=_Measured)


def spread(samples: Sequence[SampleT], value: Callable[[SampleT], float]) -> Spread:
    """Summarise ``value`` of each sample."""
    return Spread.of([value(sample) for sample in samples])


def group_samples(
    samples: Sequence[SampleT], key: Callable[[SampleT], tuple[str, ...]]
) -> dict[tuple[str, ...], dict[str, list[SampleT]]]:
    """Group ``samples`` by ``key``, then by setup, keeping their order."""
    groups: dict[tuple[str, ...], dict[str, list[SampleT]]] = {}
    for sample in samples:
        setups = groups.setdefault(key(sample), {})
        setups.setdefault(sample.setup, []).append(sample)
    return groups


def worker_key(sample: WorkerSample) -> tuple[str, ...]:
    """Return the host and the worker type of ``sample``."""
    return (sample.host, sample.worker)


def producer_key(sample: ProducerSample) -> tuple[str, ...]:
    """Return the host of ``sample``."""
    return (sample.host,)


def paired(
    samples: Sequence[SampleT],
    baseline: Sequence[SampleT],
    value: Callable[[SampleT], float],
    combine: Callable[[float, float], float],
) -> Spread | None:
    """Summarise ``combine(sample, baseline)`` over rounds that have both.

    Samples and baseline samples are matched by their ``round`` field.
    Returns None when no round has both.
    """
    base_by_round = {base.round: base for base in baseline}
    values = [
        combine(value(sample), value(base_by_round[sample.round]))
        for sample in samples
        if sample.round in base_by_round
    ]
    return Spread.of(values) if values else None


def ratio(value: float, base: float) -> float:
    """Return ``value / base``."""
    return value / base


def difference(value: float, base: float) -> float:
    """Return ``value - base``."""
    return value - base
