"""The Dramatiq broker and actors that the benchmark's workers and producers run.

``dramatiq benchmarks.dramatiq_app`` imports this module in each worker
process, and producers import it too. ``BENCH_SETUP`` chooses the
instrumentation, each set up as its own documentation describes:

- ``none``: no instrumentation.
- ``jobtrace``: ``jobtrace_dramatiq.instrument()`` after ``set_broker``.
- ``sentry``: ``sentry_sdk.init`` with ``traces_sample_rate=1.0`` and
  DramatiqIntegration, beside the integrations that sentry-sdk enables by
  default (RedisIntegration among them, because redis is installed). It
  runs before the broker is built, because the integration adds its
  middleware in a patched ``Broker.__init__``. Sentry's Dramatiq guide
  leaves out ``traces_sample_rate`` and states that the integration
  reports errors only, but sentry-sdk 2.76 starts a transaction per
  message once tracing is on.

The broker is a RedisBroker with Dramatiq's default middleware, except
Prometheus: Dramatiq 1.17 lists it by default, and it would start an HTTP
server on 0.0.0.0:9191 in every worker.
"""

from __future__ import annotations

import json
import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware

from benchmarks._cpu import tree_cpu_seconds

SETUP = os.environ.get("BENCH_SETUP", "none")
SETUPS = ("none", "jobtrace", "sentry")
if SETUP not in SETUPS:
    raise RuntimeError(
        f"Invalid BENCH_SETUP={SETUP!r}, expected one of {', '.join(SETUPS)}"
    )

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
#: The queue's name, also the broker's key namespace, so that the keys of
#: one round share a prefix.
QUEUE = os.environ.get("BENCH_QUEUE", "bench")


def _start_sentry() -> None:
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    sentry_sdk.init(
        dsn=os.environ["BENCH_SENTRY_DSN"],
        traces_sample_rate=1.0,
        integrations=[DramatiqIntegration()],
    )


if SETUP == "sentry":
    _start_sentry()

broker = RedisBroker(
    url=BROKER_URL,
    namespace=QUEUE,
    middleware=[m() for m in default_middleware if m.__name__ != "Prometheus"],
)
dramatiq.set_broker(broker)

if SETUP == "jobtrace":
    import jobtrace_dramatiq

    jobtrace_dramatiq.instrument()

_marker_store = redis.Redis.from_url(BROKER_URL)


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    """Do nothing, so that only the instrumentation's overhead is measured."""


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def start_marker(key: str) -> None:
    """Record the time and the worker's CPU time before the measured jobs."""
    _marker_store.ping()
    _record(key)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def end_marker(key: str) -> None:
    """Export what is still buffered, then record the time and CPU time."""
    flush_telemetry()
    _record(key)


def _record(key: str) -> None:
    # The benchmark starts the dramatiq command in a session of its own, so
    # its main process leads the process group of every worker process,
    # whether Python forks them or starts them from a fork server.
    sample = {"time": time.perf_counter(), "cpu": tree_cpu_seconds(os.getpgrp())}
    _marker_store.set(key, json.dumps(sample), ex=3600)


def flush_telemetry() -> None:
    """Export the spans or transactions that the setup still buffers."""
    if SETUP == "jobtrace":
        import jobtrace

        jobtrace.flush(timeout=30)
    elif SETUP == "sentry":
        import sentry_sdk

        sentry_sdk.flush(timeout=30)
