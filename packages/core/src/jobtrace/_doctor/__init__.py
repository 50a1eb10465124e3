"""``jobtrace doctor``: check the environment a worker runs in.

The command reads the settings the way a worker would, lists the installed
hosts and plugins, probes the OTLP endpoints, looks for other tracers and
states what each host's process model needs. It exits 1 when a check found
a problem, and every problem carries the fix. Warnings and notes do not
change the exit status.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from jobtrace._doctor import (
    _config,
    _endpoint,
    _hosts,
    _processes,
    _sdk,
    _tracers,
)
from jobtrace._doctor._finding import LEVELS, Finding
from jobtrace._version import __version__

__all__ = ["DEFAULT_TIMEOUT", "Finding", "Report", "collect", "run"]

DEFAULT_TIMEOUT = _endpoint.DEFAULT_TIMEOUT
_SECTIONS = {
    "settings": "Settings",
    "plugins": "Plugins",
    "endpoint": "Exporter endpoints",
    "tracers": "Other tracers",
    "processes": "Process model",
}


@dataclasses.dataclass
class Report:
    """Everything that ``jobtrace doctor`` prints."""

    settings: list[_config.Variable]
    otel: list[_config.Variable]
    versions: dict[str, str | None]
    plugins: list[_hosts.Plugin]
    apps: list[str]
    findings: list[Finding]

    @property
    def exit_code(self) -> int:
        """1 when any finding is a problem, else 0."""
        return 1 if self.count("problem") else 0

    def count(self, level: str) -> int:
        """Return how many findings have ``level``."""
        return sum(1 for finding in self.findings if finding.level == level)

    def as_dict(self) -> dict[str, object]:
        """Return the report as plain values, for ``--json``."""
        return {
            "jobtrace": __version__,
            "python": platform.python_version(),
            "apps": self.apps,
            "settings": [variable.as_dict() for variable in self.settings],
            "otel": [variable.as_dict() for variable in self.otel],
            "versions": self.versions,
            "plugins": [plugin.as_dict() for plugin in self.plugins],
            "findings": [finding.as_dict() for finding in self.findings],
            "problems": self.count("problem"),
            "warnings": self.count("warning"),
            "exit_code": self.exit_code,
        }


def collect(
    apps: list[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> Report:
    """Run every check and return the report.

    The application modules in ``apps`` are imported first, before the
    doctor imports any plugin, so that what they instrument shows.
    """
    env = os.environ if environ is None else environ
    findings: list[Finding] = []
    used: set[str] | None = None
    if apps:
        used, imported = _hosts.import_apps(apps)
        findings.extend(imported)

    settings, setting_variables, setting_findings = _config.read_settings(env)
    findings.extend(setting_findings)
    findings.extend(_config.disabled_findings(settings, env))
    sdk_disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    enabled = settings.enabled and not sdk_disabled

    plugins = _hosts.plugins()
    hosts = _relevant_hosts(plugins, used)
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("settings", lambda: _sdk.check(env)),
        ("plugins", lambda: _hosts.plugin_findings(plugins, used, enabled)),
        ("endpoint", lambda: _endpoint.check(env, timeout)),
        ("tracers", lambda: _tracers.find(hosts, env)),
        ("processes", lambda: _processes.find(hosts, env, imported=bool(apps))),
    ]
    for section, check in checks:
        findings.extend(_guarded(section, check))

    return Report(
        settings=setting_variables,
        otel=_config.read_otel(env, settings.redacted_keys),
        versions=_hosts.versions(),
        plugins=plugins,
        apps=apps,
        findings=findings,
    )


def _guarded(section: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    # A check that fails on an unusual environment must not hide the others.
    try:
        return check()
    except Exception as error:
        return [
            Finding(
                section,
                "problem",
                f"The {section} check failed: {type(error).__name__}: {error}",
                fix="report this as a jobtrace bug, with the output of "
                "`jobtrace doctor --json`",
            )
        ]


def _relevant_hosts(plugins: list[_hosts.Plugin], used: set[str] | None) -> set[str]:
    # After --app, the hosts the application loaded; otherwise every host
    # that is installed with its plugin.
    if used is not None:
        return used
    return {
        plugin.spec.host
        for plugin in plugins
        if plugin.version is not None and plugin.host_version is not None
    }


def run(
    apps: list[str],
    *,
    as_json: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    out: TextIO | None = None,
) -> int:
    """Run the checks, print the report and return the exit status."""
    stream = sys.stdout if out is None else out
    report = collect(apps, timeout=timeout)
    if as_json:
        json.dump(report.as_dict(), stream, indent=2)
        stream.write("\n")
    else:
        stream.write(render(report))
    return report.exit_code


def render(report: Report) -> str:
    """Return the report as readable text."""
    lines = [f"jobtrace doctor {__version__}, Python {platform.python_version()}"]
    if report.apps:
        lines.append(f"Imported: {', '.join(report.apps)}")

    lines += ["", "JOBTRACE_* settings (effective values)"]
    lines += _variable_lines(report.settings)
    lines += ["", "OTEL_* variables (secrets masked)"]
    lines += _variable_lines(report.otel)

    lines += ["", "Installed versions"]
    width = max(len(name) for name in report.versions)
    for name, version in report.versions.items():
        lines.append(f"  {name:<{width}}  {version or '-'}")

    lines += ["", "jobtrace plugins"]
    for plugin in report.plugins:
        lines.append(f"  {_plugin_line(plugin)}")

    for section, title in _SECTIONS.items():
        found = [item for item in report.findings if item.section == section]
        if found:
            lines += ["", title]
            for finding in sorted(found, key=lambda item: LEVELS.index(item.level)):
                lines += _finding_lines(finding)

    problems, warnings = report.count("problem"), report.count("warning")
    lines += ["", f"{problems} problem(s), {warnings} warning(s)"]
    return "\n".join(lines) + "\n"


def _variable_lines(variables: list[_config.Variable]) -> list[str]:
    width = max(len(variable.name) for variable in variables)
    lines = []
    for variable in variables:
        if variable.source == "unset":
            value = "(unset)"
        elif variable.source == "default":
            value = f"{variable.value} (default)"
        else:
            value = variable.value
        lines.append(f"  {variable.name:<{width}}  {value}")
    return lines


def _plugin_line(plugin: _hosts.Plugin) -> str:
    spec = plugin.spec
    if plugin.version is None:
        return f"{spec.distribution}: not installed"
    host = f"{spec.host} {plugin.host_version or '(not installed)'}"
    if plugin.instrumented:
        state = "instrumented in this process"
    else:
        state = "not instrumented in this process"
    entry = plugin.entry_point or "no entry point"
    return f"{spec.distribution} {plugin.version} ({entry}), {host}: {state}"


def _finding_lines(finding: Finding) -> list[str]:
    labels = {"problem": "PROBLEM", "warning": "warning", "ok": "ok", "note": "note"}
    lines = [f"  {labels[finding.level]:<8} {finding.message}"]
    if finding.fix:
        lines.append(f"  {'':<8} fix: {finding.fix}")
    return lines
