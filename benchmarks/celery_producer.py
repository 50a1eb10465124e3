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

from benchmarks import celery_app
from benchmarks._producer import time_enqueues


def main(argv: list[str] | None = None) -> None:
    """Enqueue the warm-up jobs, then the timed ones, and print the times."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, required=True, help="timed enqueues")
    parser.add_argument("--warmup", type=int, default=100, help="untimed enqueues")
    args = parser.parse_args(argv)

    celery_app.instrument_producer()
    result = time_enqueues(
        celery_app.noop.delay, celery_app.flush_telemetry, args.calls, args.warmup
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
