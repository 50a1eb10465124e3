"""Time the enqueues of one producer process and print the result as JSON.

The benchmark runs ``python -m benchmarks.celery_producer`` once per setup
and round, with ``BENCH_SETUP`` and the other variables that
:mod:`benchmarks.celery_app` reads. The timed part covers the enqueues and a
final flush of the setup's exporter, so the export work of the send spans is
included in both the wall time and the process CPU time (all threads).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks import celery_app


def main(argv: list[str] | None = None) -> None:
    """Enqueue the warm-up jobs, then the timed ones, and print the times."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, required=True, help="timed enqueues")
    parser.add_argument("--warmup", type=int, default=100, help="untimed enqueues")
    args = parser.parse_args(argv)

    celery_app.instrument_producer()
    # The warm-up opens the broker connection and, for the instrumented
    # setups, builds the tracer or client and its export thread.
    _enqueue(args.warmup)
    celery_app.flush_telemetry()

    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    _enqueue(args.calls)
    celery_app.flush_telemetry()
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start

    print(json.dumps({"calls": args.calls, "wall": wall, "cpu": cpu}))


def _enqueue(count: int) -> None:
    for _ in range(count):
        celery_app.noop.delay()


if __name__ == "__main__":
    main()
