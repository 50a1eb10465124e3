"""Rendering of a job's arguments for its process span, when opted in.

Arguments often carry personal data and credentials, so jobtrace records
none by default. With ``JOBTRACE_RECORD_ARGUMENTS=true`` the process span
gets ``jobtrace.job.args`` and ``jobtrace.job.kwargs`` as strings of at
most ``JOBTRACE_ARGUMENTS_MAX_LENGTH`` characters each. The value of every
mapping key that looks secret is replaced by ``[REDACTED]``, at any depth.
Only built-in values are rendered: any other object appears as its class
name, because its ``repr`` may contain anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Key parts whose values are always redacted. A key matches when it
#: contains one of them, ignoring case, with "-" read as "_".
DEFAULT_REDACTED_KEYS = (
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
)
REDACTED = "[REDACTED]"
ARGS_ATTRIBUTE = "jobtrace.job.args"
KWARGS_ATTRIBUTE = "jobtrace.job.kwargs"
ELLIPSIS = "..."
#: Nesting depth at which containers are shown as ``...``.
MAX_DEPTH = 6

_SCALARS = (bool, int, float, type(None))


class _Budget(Exception):
    """Raised when a rendering reaches its maximum length."""


class _Renderer:
    def __init__(self, redacted: Iterable[str], limit: int) -> None:
        self.redacted = tuple(redacted)
        self.limit = limit
        self.parts: list[str] = []
        self.length = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)
        if self.length > self.limit:
            raise _Budget

    def secret(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        normalized = key.lower().replace("-", "_")
        return any(part in normalized for part in self.redacted)

    def value(self, value: Any, depth: int) -> None:
        if isinstance(value, (str, bytes)):
            # Only the part that fits is rendered, however long the value.
            self.add(repr(value[: self.limit + 1]))
        elif isinstance(value, _SCALARS):
            self.scalar(value)
        elif depth >= MAX_DEPTH:
            self.add(ELLIPSIS)
        elif isinstance(value, Mapping):
            self.mapping(value, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            self.sequence(value, depth + 1)
        else:
            self.add(f"<{type(value).__name__}>")

    def scalar(self, value: Any) -> None:
        try:
            self.add(repr(value))
        except ValueError:
            # Python refuses to convert an int of more than 4300 digits.
            self.add(f"<{type(value).__name__}>")

    def mapping(self, value: Mapping[Any, Any], depth: int) -> None:
        self.add("{")
        for number, (key, item) in enumerate(value.items()):
            if number:
                self.add(", ")
            self.value(key, depth)
            self.add(": ")
            if self.secret(key):
                self.add(repr(REDACTED))
            else:
                self.value(item, depth)
        self.add("}")

    def sequence(self, value: Iterable[Any], depth: int) -> None:
        opening, closing = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        self.add(opening)
        for number, item in enumerate(value):
            if number:
                self.add(", ")
            self.value(item, depth)
        self.add(closing)


def render(value: Any, redacted: Iterable[str], limit: int) -> str:
    """Render ``value`` in at most ``limit`` characters, redacting secrets.

    A rendering that would be longer is cut, and ends with ``...``. The
    work stops at the limit, so a huge argument costs no more than a
    small one.
    """
    renderer = _Renderer(redacted, limit)
    try:
        renderer.value(value, 0)
    except _Budget:
        text = "".join(renderer.parts)
        return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS
    return "".join(renderer.parts)


def argument_attributes(
    args: Any, kwargs: Any, redacted: Iterable[str], limit: int
) -> dict[str, str]:
    """Return the span attributes for a job's positional and keyword arguments."""
    keys = tuple(redacted)
    attributes = {}
    if args is not None:
        attributes[ARGS_ATTRIBUTE] = render(args, keys, limit)
    if kwargs is not None:
        attributes[KWARGS_ATTRIBUTE] = render(kwargs, keys, limit)
    return attributes
