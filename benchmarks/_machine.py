"""The machine and the package versions that a benchmark run used."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import redis

#: Distributions whose versions BENCHMARKS.md lists.
DISTRIBUTIONS = (
    "celery",
    "kombu",
    "redis",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-celery",
    "rq",
    "opentelemetry-instrumentation-rq",
    "dramatiq",
    "sentry-sdk",
    "jobtrace",
    "jobtrace-celery",
    "jobtrace-rq",
    "jobtrace-dramatiq",
)


def machine() -> dict[str, str]:
    """Describe the CPU, memory and operating system."""
    return {
        "CPU": _cpu_model(),
        "Logical CPUs": str(os.cpu_count()),
        "Memory": _memory(),
        "OS": platform.platform(),
    }


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages as text."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def versions(redis_url: str) -> dict[str, str]:
    """Return the versions of Python, the Redis server and DISTRIBUTIONS."""
    found = {"python": platform.python_version()}
    found["redis server"] = _redis_server_version(redis_url)
    for name in DISTRIBUTIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            kib = int(line.split()[1])
            return f"{kib / 1024**2:.1f} GiB"
    return "unknown"


def _redis_server_version(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return str(client.info("server").get("redis_version", "unknown"))
    finally:
        client.close()
