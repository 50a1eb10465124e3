"""jobtrace's targets, checked against the medians of one benchmark run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from benchmarks._report import Forking, Labels, Table
from benchmarks._samples import (
    BASELINE,
    ProducerSample,
    SampleT,
    WorkerSample,
    difference,
    group_samples,
    paired,
    producer_key,
    ratio,
    worker_key,
)

#: Worker throughput at least this share of the uninstrumented worker's,
#: and each overhead at most this share of
#: opentelemetry-instrumentation-celery's.
MIN_THROUGHPUT_RATIO = 0.96
MAX_SHARE_OF_OTEL = 0.5
#: The throughput target of a worker that forks a process per job, whose
#: work horse must also deliver every span before it exits.
MIN_FORKING_THROUGHPUT_RATIO = 0.90
JOBTRACE = "jobtrace"
OTEL = "otel"
#: opentelemetry-instrumentation-celery's overhead on this host sets every
#: host's budget. Other hosts' workers are held to its overhead on
#: BUDGET_WORKER, the Celery pool that the targets were first stated for,
#: and other hosts' producers to its overhead on the Celery producer.
BUDGET_HOST = "celery"
BUDGET_WORKER = "prefork"


def target_table(
    workers: Sequence[WorkerSample],
    producers: Sequence[ProducerSample],
    labels: Labels,
    forking: Forking,
) -> Table:
    """Compare jobtrace's medians with the targets, where jobtrace ran.

    A budget row whose reference setup did not run reads "not measured".
    """
    rows: list[tuple[str, ...]] = []
    by_worker = group_samples(workers, worker_key)
    for (host, worker), group in by_worker.items():
        name = f"{host} {labels[host].get(worker, worker)}"
        if worker in forking.get(host, {}):
            rows += _ratio_row(name, group, MIN_FORKING_THROUGHPUT_RATIO)
            rows += _delivery_row(name, group)
            continue

        rows += _ratio_row(name, group, MIN_THROUGHPUT_RATIO)
        own = host == BUDGET_HOST
        reference = group if own else by_worker.get((BUDGET_HOST, BUDGET_WORKER), {})
        budget = _budget(labels, None if own else BUDGET_WORKER)
        rows += _share_row(
            f"{name}: extra worker CPU", budget, group, reference, _cpu_per_job
        )

    by_host = group_samples(producers, producer_key)
    reference_enqueues = by_host.get((BUDGET_HOST,), {})
    for (host,), enqueues in by_host.items():
        budget = _budget(labels, None if host == BUDGET_HOST else "producer")
        for measure, value in (("time", _wall_per_call), ("CPU", _cpu_per_call)):
            name = f"{host} producer: extra {measure}"
            rows += _share_row(name, budget, enqueues, reference_enqueues, value)
    return Table("Targets", ("Target", "Measured (median)", "Result"), rows)


def _ratio_row(
    name: str, group: Mapping[str, Sequence[WorkerSample]], minimum: float
) -> list[tuple[str, ...]]:
    mine = paired(group.get(JOBTRACE, []), group.get(BASELINE, []), _throughput, ratio)
    if mine is None:
        return []
    return [
        (
            f"{name}: throughput ratio ≥ {minimum:.2f}",
            f"{mine.median:.2f}",
            _verdict(mine.median >= minimum),
        )
    ]


def _delivery_row(
    name: str, group: Mapping[str, Sequence[WorkerSample]]
) -> list[tuple[str, ...]]:
    shares = [run.delivered for run in group.get(JOBTRACE, [])]
    known = [share for share in shares if share is not None]
    if not known:
        return []
    lowest = min(known)
    return [(f"{name}: delivers every span", f"{lowest:.1%}", _verdict(lowest >= 1))]


def _budget(labels: Labels, reference: str | None) -> str:
    """Name the budget: half of the reference setup's overhead."""
    otel = labels.get(BUDGET_HOST, {}).get(OTEL, OTEL)
    if reference is None:
        return f"half of {otel}'s"
    where = labels.get(BUDGET_HOST, {}).get(reference, reference)
    return f"half of {otel}'s on {BUDGET_HOST} {where}"


def _share_row(
    name: str,
    budget: str,
    group: Mapping[str, Sequence[SampleT]],
    reference: Mapping[str, Sequence[SampleT]],
    value: Callable[[SampleT], float],
) -> list[tuple[str, ...]]:
    mine = paired(group.get(JOBTRACE, []), group.get(BASELINE, []), value, difference)
    if mine is None:
        return []
    theirs = paired(
        reference.get(OTEL, []), reference.get(BASELINE, []), value, difference
    )
    if theirs is None:
        return [(f"{name} ≤ {budget}", f"{mine.median:+,.0f} µs", "not measured")]
    limit = MAX_SHARE_OF_OTEL * theirs.median
    return [
        (
            f"{name} ≤ {budget}",
            f"{mine.median:+,.0f} µs, limit {limit:+,.0f} µs",
            _verdict(mine.median <= limit),
        )
    ]


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _throughput(sample: WorkerSample) -> float:
    return sample.throughput


def _cpu_per_job(sample: WorkerSample) -> float:
    return sample.cpu_us_per_job


def _wall_per_call(sample: ProducerSample) -> float:
    return sample.wall_us_per_call


def _cpu_per_call(sample: ProducerSample) -> float:
    return sample.cpu_us_per_call
