"""Installed hosts and plugins, and what an application import instrumented."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from types import FrameType

from packaging.requirements import Requirement
from packaging.version import InvalidVersion

from jobtrace._doctor._finding import Finding
from jobtrace._doctor._masking import mask_message
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
#: Seconds that the child import of an ``--app`` module may take.
CHILD_IMPORT_TIMEOUT = 60.0
_IMPORT_ENDED = b"jobtrace-doctor-import-ended"
#: The child's program: import the module, write the marker whether the
#: import returned or raised, and leave at once, without waiting for
#: threads that the module started.
_CHILD_IMPORT = f"""
import importlib, os, sys
sys.path.insert(0, os.getcwd())
try:
    importlib.import_module(sys.argv[1])
except BaseException:
    pass
sys.stdout.write({_IMPORT_ENDED.decode()!r})
sys.stdout.flush()
os._exit(0)
"""


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
        ended = _import_in_child(module)
        if ended is not None:
            findings.append(
                Finding(
                    "plugins",
                    "problem",
                    f"Importing {module} {ended}, so the doctor did not import it",
                    fix="keep the module's import free of process exits and "
                    "endless waits: a worker that imports it stops the same way",
                )
            )
            continue
        try:
            with _ctrl_c_passes():
                importlib.import_module(module)
        except (Exception, SystemExit, KeyboardInterrupt) as error:
            # A KeyboardInterrupt that the module raises itself is reported
            # like any error. A real Ctrl-C leaves the block re-raised.
            findings.append(
                Finding(
                    "plugins",
                    "problem",
                    f"Importing {module} failed: {type(error).__name__}: "
                    + mask_message(str(error)),
                    fix="check the module name, and run the doctor from the "
                    "directory the worker starts in, with the same environment",
                )
            )
        else:
            findings.append(Finding("plugins", "ok", f"Imported {module}"))
    # The doctor itself imports no host before this point.
    return {spec.host for spec in PLUGINS if spec.host in sys.modules}, findings


class _CtrlC(BaseException):
    """A SIGINT that arrived during an import, distinct from a module's raise."""


@contextlib.contextmanager
def _ctrl_c_passes() -> Iterator[None]:
    # Turns a real SIGINT into KeyboardInterrupt again outside the import,
    # so that the doctor stops instead of reporting the import as failed.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise _CtrlC

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    except _CtrlC:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _import_in_child(module: str) -> str | None:
    """Import ``module`` in a child interpreter first; return how it ended.

    A module that calls ``os._exit()``, kills its own process or waits
    forever at import would end or stop the doctor without a report. The
    child shows that first. Returns None when the child's import returned
    or raised, which the doctor's own import then reports; otherwise how
    the child ended.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD_IMPORT, module],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=CHILD_IMPORT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {CHILD_IMPORT_TIMEOUT:.0f} s"
    if done.stdout.endswith(_IMPORT_ENDED):
        return None
    if done.returncode < 0:
        return f"killed the process with signal {-done.returncode}"
    return f"ended the process with exit status {done.returncode}"


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
