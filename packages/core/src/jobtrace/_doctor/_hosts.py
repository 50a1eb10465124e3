"""Installed hosts and plugins, and what an application import instrumented."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from importlib.metadata import entry_points

from packaging.requirements import Requirement
from packaging.version import InvalidVersion

from jobtrace._doctor._finding import Finding
from jobtrace._hosts import host_version

#: Distributions whose versions the report lists.
DISTRIBUTIONS = (
    "jobtrace",
    "jobtrace-celery",
    "jobtrace-rq",
    "jobtrace-dramatiq",
    "celery",
    "kombu",
    "billiard",
    "rq",
    "dramatiq",
    "redis",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-instrumentation",
    "opentelemetry-distro",
)
ENTRY_POINT_GROUP = "opentelemetry_instrumentor"


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """The names and setup text of one jobtrace plugin."""

    host: str  # the host's distribution and top-level module
    title: str
    module: str
    distribution: str
    supported_constant: str
    instrumentor: str
    setup: str  # where instrument() goes, for the fix text


PLUGINS = (
    PluginSpec(
        "celery",
        "Celery",
        "jobtrace_celery",
        "jobtrace-celery",
        "SUPPORTED_CELERY",
        "CeleryInstrumentor",
        "call jobtrace_celery.instrument() in the module that creates the Celery app",
    ),
    PluginSpec(
        "rq",
        "RQ",
        "jobtrace_rq",
        "jobtrace-rq",
        "SUPPORTED_RQ",
        "RQInstrumentor",
        "call jobtrace_rq.instrument() in the settings module that "
        "`rq worker -c` loads, or in the worker class's module",
    ),
    PluginSpec(
        "dramatiq",
        "Dramatiq",
        "jobtrace_dramatiq",
        "jobtrace-dramatiq",
        "SUPPORTED_DRAMATIQ",
        "DramatiqInstrumentor",
        "call jobtrace_dramatiq.instrument() after dramatiq.set_broker() in "
        "the broker module",
    ),
)


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One plugin's state in this environment and this process."""

    spec: PluginSpec
    version: str | None
    entry_point: str | None
    host_version: str | None
    instrumented: bool

    def as_dict(self) -> dict[str, object]:
        """Return the state as a dict, for ``--json``."""
        return {
            "host": self.spec.host,
            "distribution": self.spec.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "host_version": self.host_version,
            "instrumented": self.instrumented,
        }


def versions() -> dict[str, str | None]:
    """Return the installed version of each of :data:`DISTRIBUTIONS`."""
    return {name: host_version(name) for name in DISTRIBUTIONS}


def import_apps(names: list[str]) -> tuple[set[str], list[Finding]]:
    """Import each application module, as a worker would.

    ``names`` are module names, optionally with ``:attribute`` as Celery's
    ``-A`` takes them. Returns the hosts that the imports loaded and a
    problem for each module that failed to import.
    """
    if os.getcwd() not in sys.path:
        # `celery -A`, `rq worker -c` and `dramatiq` find the application
        # in the current directory; a console script's sys.path lacks it.
        sys.path.insert(0, os.getcwd())
    findings = []
    for name in names:
        module = name.partition(":")[0]
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as error:
            findings.append(
                Finding(
                    "plugins",
                    "problem",
                    f"Importing {module} failed: {type(error).__name__}: {error}",
                    fix="check the module name, and run the doctor from the "
                    "directory the worker starts in, with the same environment",
                )
            )
        else:
            findings.append(Finding("plugins", "ok", f"Imported {module}"))
    # The doctor itself imports no host before this point.
    return {spec.host for spec in PLUGINS if spec.host in sys.modules}, findings


def plugins() -> list[Plugin]:
    """Return every known plugin, installed or not, with its state."""
    found = {
        point.value.partition(":")[0]: f"{point.name} = {point.value}"
        for point in entry_points(group=ENTRY_POINT_GROUP)
    }
    return [
        Plugin(
            spec,
            host_version(spec.distribution),
            found.get(spec.module),
            host_version(spec.host),
            _instrumented(spec),
        )
        for spec in PLUGINS
    ]


def _instrumented(spec: PluginSpec) -> bool:
    module = sys.modules.get(spec.module)
    instrumentor = getattr(module, spec.instrumentor, None)
    return bool(instrumentor and instrumentor().is_instrumented_by_opentelemetry)


def plugin_findings(
    found: list[Plugin], used: set[str] | None, enabled: bool
) -> list[Finding]:
    """Check installation and host ranges, and, after ``--app``, activity.

    ``used`` contains the hosts that the application imports loaded, or is
    None when no application was imported.
    """
    findings = []
    for plugin in found:
        findings.extend(_installation(plugin))
        if used is not None and plugin.spec.host in used and enabled:
            findings.append(_activity(plugin))
        elif used is None and plugin.instrumented:
            # For example under opentelemetry-instrument, which loads every
            # plugin's entry point at startup.
            findings.append(_activity(plugin))
    if used is None and not any(plugin.instrumented for plugin in found):
        findings.append(
            Finding(
                "plugins",
                "note",
                "No application was imported, so whether your app calls "
                "instrument() is not checked. Run `jobtrace doctor --app "
                "MODULE` with the Celery app module, the RQ settings module or "
                "the Dramatiq broker module",
            )
        )
    return findings


def _installation(plugin: Plugin) -> list[Finding]:
    spec = plugin.spec
    if plugin.version is None:
        if plugin.host_version is None:
            return []
        return [
            Finding(
                "plugins",
                "note",
                f"{spec.host} {plugin.host_version} is installed, but "
                f"{spec.distribution} is not, so jobtrace does not trace "
                f"{spec.title}",
                fix=f'pip install "jobtrace[{spec.host}]" to trace it',
            )
        ]
    if plugin.entry_point is None:
        return [
            Finding(
                "plugins",
                "warning",
                f"{spec.distribution} has no {ENTRY_POINT_GROUP} entry point, "
                "so opentelemetry-instrument does not load it",
                fix=f"reinstall {spec.distribution}",
            )
        ]
    if plugin.host_version is None:
        return [
            Finding(
                "plugins",
                "note",
                f"{spec.distribution} is installed, but {spec.host} is not",
            )
        ]
    requirement = _supported(spec)
    if requirement is not None and not _contains(requirement, plugin.host_version):
        return [
            Finding(
                "plugins",
                "problem",
                f"{spec.distribution} supports {requirement}, found "
                f"{spec.host} {plugin.host_version}, so instrument() raises",
                fix=f"install a supported {spec.host}, or uninstall "
                f"{spec.distribution}",
            )
        ]
    return []


def _supported(spec: PluginSpec) -> str | None:
    try:
        module = importlib.import_module(spec.module)
    except Exception:
        return None
    value = getattr(module, spec.supported_constant, None)
    return value if isinstance(value, str) else None


def _contains(requirement: str, found: str) -> bool:
    try:
        return Requirement(requirement).specifier.contains(found)
    except InvalidVersion:
        return False


def _activity(plugin: Plugin) -> Finding:
    spec = plugin.spec
    if plugin.instrumented:
        return Finding(
            "plugins",
            "ok",
            f"{spec.title} is instrumented in this process by "
            f"{spec.distribution} {plugin.version}",
        )
    if plugin.version is None:
        return Finding(
            "plugins",
            "problem",
            f"The application uses {spec.title}, but {spec.distribution} is "
            "not installed",
            fix=f'pip install "jobtrace[{spec.host}]", then {spec.setup}',
        )
    return Finding(
        "plugins",
        "problem",
        f"The application imports {spec.title}, but importing it did not "
        f"instrument {spec.title}",
        fix=f"{spec.setup}, or start the worker under opentelemetry-instrument",
    )
