"""Time the enqueues of one RQ producer process and print the result as JSON.

The benchmark runs ``python -m benchmarks.rq_producer`` once per setup and
round, with ``BENCH_SETUP`` and the other variables that
:mod:`benchmarks.rq_app` reads; importing that module sets up the
instrumentation. Each enqueue is ``Queue.enqueue(noop)``, outside any span
or transaction, as a script or a web request without tracing would make it.
"""

from __future__ import annotations

import argparse
import json
import os

import redis
from rq import Queue

from benchmarks import rq_app
from benchmarks._producer import time_enqueues


def main(argv: list[str] | None = None) -> None:
    """Enqueue the warm-up jobs, then the timed ones, and print the times."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, required=True, help="timed enqueues")
    parser.add_argument("--warmup", type=int, default=100, help="untimed enqueues")
    args = parser.parse_args(argv)

    connection = redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])
    queue = Queue(os.environ["BENCH_QUEUE"], connection=connection)

    def enqueue() -> None:
        queue.enqueue(rq_app.noop)

    result = time_enqueues(enqueue, rq_app.flush_telemetry, args.calls, args.warmup)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
