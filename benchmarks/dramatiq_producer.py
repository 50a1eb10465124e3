"""Time the enqueues of one Dramatiq producer process and print the result as JSON.

The benchmark runs ``python -m benchmarks.dramatiq_producer`` once per setup
and round, with ``BENCH_SETUP`` and the other variables that
:mod:`benchmarks.dramatiq_app` reads; importing that module builds the
broker and sets up the instrumentation. Each enqueue is ``noop.send()``,
outside any span or transaction.
"""

from __future__ import annotations

import argparse
import json

from benchmarks import dramatiq_app
from benchmarks._producer import time_enqueues


def main(argv: list[str] | None = None) -> None:
    """Enqueue the warm-up jobs, then the timed ones, and print the times."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, required=True, help="timed enqueues")
    parser.add_argument("--warmup", type=int, default=100, help="untimed enqueues")
    args = parser.parse_args(argv)

    result = time_enqueues(
        dramatiq_app.noop.send, dramatiq_app.flush_telemetry, args.calls, args.warmup
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
