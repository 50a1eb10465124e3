"""Version checks for the host libraries that plugins instrument."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement
from packaging.version import InvalidVersion


def host_version(distribution: str) -> str | None:
    """Return the installed version of ``distribution``, or None."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def require_host(requirement: str, *, plugin: str) -> str:
    """Return the installed host's version, checked against ``requirement``.

    ``requirement`` is a specifier such as ``"celery >= 5.3, < 6"``, and
    ``plugin`` names the distribution that needs it, for the message.

    Raises:
        RuntimeError: the host is missing or outside ``requirement``.
    """
    parsed = Requirement(requirement)
    found = host_version(parsed.name)
    try:
        supported = found is not None and parsed.specifier.contains(found)
    except InvalidVersion:
        supported = False
    if not supported:
        raise RuntimeError(
            f"{plugin} supports {requirement}, found {parsed.name} "
            f"{found or '(not installed)'}; install a supported {parsed.name} "
            f"or uninstall {plugin}"
        )
    return found or ""
