"""Process model requirements of each host, checked where this process can.

The facts come from docs/celery.md, docs/rq.md and docs/dramatiq.md.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Mapping
from typing import Any

from packaging.version import InvalidVersion, Version

from jobtrace._doctor._finding import Finding
from jobtrace._hosts import host_version


def find(hosts: set[str], environ: Mapping[str, str], imported: bool) -> list[Finding]:
    """Return the process model facts and checks for each host in ``hosts``.

    ``imported`` is True when an application was imported, so that the
    state of this process reflects the worker's.
    """
    findings = []
    if "celery" in hosts:
        findings.extend(_celery(imported))
    if "rq" in hosts:
        findings.extend(_rq(imported))
    if "dramatiq" in hosts:
        findings.extend(_dramatiq())
    if imported:
        findings.extend(_provider(hosts))
    findings.extend(_distro(environ))
    return findings


def _celery(imported: bool) -> list[Finding]:
    pools = _celery_pools() if imported else set()
    findings = []
    source = " (the app's worker_pool; celery worker -P overrides it)" if pools else ""
    if not pools or "prefork" in pools:
        findings.append(
            Finding(
                "processes",
                "note",
                f"Celery prefork pool{source}: the worker's start hook builds "
                "the tracer "
                "provider before the pool forks and calls jobtrace.pipe_forks(), "
                "so each child hands its spans to the main process through a "
                "pipe and exports nothing itself",
            )
        )
    if pools - {"prefork"}:
        findings.append(
            Finding(
                "processes",
                "note",
                f"Celery {', '.join(sorted(pools - {'prefork'}))} pool{source}: "
                "the main process exports, and flushes in worker_shutdown",
            )
        )
    return findings


def _celery_pools() -> set[str]:
    # The Celery apps that the imported modules created. celery's
    # current_app would build a default app when there is none.
    state: Any = sys.modules.get("celery._state")
    apps = list(getattr(state, "_apps", ()) or ())
    pools = set()
    for app in apps:
        try:
            pool = app.conf.worker_pool
        except Exception:
            continue
        pools.add(str(pool).rpartition(":")[2].lower() or "prefork")
    return pools


def _rq(imported: bool) -> list[Finding]:
    findings = [
        Finding(
            "processes",
            "note",
            "RQ forking Worker: the worker builds the tracer provider before "
            "its first fork, and each work horse hands its spans to the worker "
            "through a pipe, so no job waits for an export",
        )
    ]
    major = _major(host_version("rq"))
    if major == 2:
        findings.append(
            Finding(
                "processes",
                "warning",
                "RQ 2.x starts SpawnWorker horses with the plain rq.Worker "
                "class, so a SpawnWorker's jobs are not traced",
                fix="use the forking Worker, start the worker under "
                "opentelemetry-instrument, or upgrade to RQ 3.0",
            )
        )
    elif major is not None and major >= 3:
        findings.append(
            Finding(
                "processes",
                "note",
                "RQ SpawnWorker: its horses import the worker class's module "
                "but not the -c settings module, so define the class in a "
                "module that calls jobtrace_rq.instrument() and pass it with -w",
            )
        )
    if imported and not logging.getLogger().handlers:
        findings.append(
            Finding(
                "processes",
                "note",
                "RQ sets up only its own logger, and the imported modules "
                "configure no logging, so an RQ worker prints jobtrace's "
                "warnings as bare messages without level or logger name; "
                "call logging.basicConfig() in the settings module to format "
                "them",
            )
        )
    return findings


def _major(version: str | None) -> int | None:
    try:
        return Version(version).major if version else None
    except InvalidVersion:
        return None


def _dramatiq() -> list[Finding]:
    findings = [
        Finding(
            "processes",
            "note",
            "Dramatiq: each worker process builds its own tracer provider in "
            "after_process_boot and flushes in before_worker_shutdown and "
            "after_worker_shutdown",
        )
    ]
    broker_module: Any = sys.modules.get("dramatiq.broker")
    broker = getattr(broker_module, "global_broker", None)
    hooks: Any = sys.modules.get("jobtrace_dramatiq._hooks")
    if broker is None:
        return findings
    tracing = getattr(hooks, "Tracing", None)
    middleware = list(getattr(broker, "middleware", ()))
    positions = [
        index
        for index, item in enumerate(middleware)
        if tracing is not None and isinstance(item, tracing)
    ]
    name = type(broker).__name__
    if not positions:
        findings.append(
            Finding(
                "processes",
                "problem",
                f"The global Dramatiq broker ({name}) has no Tracing middleware, "
                "so its messages are not traced",
                fix="call jobtrace_dramatiq.instrument() after "
                "dramatiq.set_broker(), or list jobtrace_dramatiq.Tracing first "
                "in the broker's middleware",
            )
        )
    elif positions[0] != 0:
        findings.append(
            Finding(
                "processes",
                "problem",
                f"Tracing is at position {positions[0] + 1} of the global "
                f"Dramatiq broker's middleware, after "
                f"{type(middleware[0]).__name__}, so retried runs show as "
                "failure and pipeline sends are not children of their run",
                fix="list jobtrace_dramatiq.Tracing first in the middleware",
            )
        )
    else:
        findings.append(
            Finding(
                "processes",
                "ok",
                f"The global Dramatiq broker ({name}) has Tracing first in its "
                "middleware",
            )
        )
    return findings


def _provider(hosts: set[str]) -> list[Finding]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from jobtrace import _handoff, _provider

    findings = []
    if (
        _provider._provider is not None
        and _provider._owns_provider
        and _provider.component() == "web"
        and hosts
    ):
        findings.append(
            Finding(
                "processes",
                "warning",
                "Importing the application built jobtrace's tracer provider "
                "(a job was enqueued or a span started at import), so a "
                "worker's spans will carry jobtrace.component=web",
                fix="set JOBTRACE_COMPONENT=worker for the worker command, or "
                "enqueue no job at import time",
            )
        )
    current = trace.get_tracer_provider()
    forking = hosts & {"celery", "rq"}
    if isinstance(current, TracerProvider) and not _provider._owns_provider:
        processors = getattr(
            getattr(current, "_active_span_processor", None), "_span_processors", ()
        )
        if forking and not any(
            isinstance(item, _handoff.HandoffProcessor) for item in processors
        ):
            findings.append(
                Finding(
                    "processes",
                    "warning",
                    "The application set its own tracer provider without "
                    "jobtrace.span_processor(), so Celery prefork children and "
                    "RQ work horses export on their own, and one killed with "
                    "SIGKILL loses the spans in its batch queue",
                    fix="add jobtrace.span_processor() to the provider",
                )
            )
    return findings


def _distro(environ: Mapping[str, str]) -> list[Finding]:
    if host_version("opentelemetry-distro") is None:
        return []
    findings = [
        Finding(
            "processes",
            "note",
            "opentelemetry-distro is installed: under opentelemetry-instrument "
            "it builds the tracer provider and jobtrace uses it as is, so add "
            "jobtrace.component=worker to OTEL_RESOURCE_ATTRIBUTES for worker "
            "commands",
        )
    ]
    grpc = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc")
    if not environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") and grpc is None:
        findings.append(
            Finding(
                "processes",
                "warning",
                "opentelemetry-distro defaults to the grpc OTLP protocol, which "
                "is not installed, so opentelemetry-instrument fails at startup "
                "with \"Requested component 'otlp_proto_grpc' not found\"",
                fix="set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, or pip "
                'install "jobtrace[grpc]"',
            )
        )
    return findings
