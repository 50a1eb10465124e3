"""Masking of secrets in the variables that ``jobtrace doctor`` prints."""

from __future__ import annotations

import re
import urllib.parse

from jobtrace._arguments import DEFAULT_REDACTED_KEYS

MASK = "***"

#: Name parts that mark a variable, header, attribute or query key as
#: secret, beside the keys that jobtrace redacts in job arguments.
_EXTRA_SECRET_PARTS = (
    "auth",
    "credential",
    "private",
    "dsn",
    "signature",
    "access_token",
    "pwd",
)
#: Short names that are secret only as a whole name, because as parts they
#: occur in harmless names (``sig`` in ``signal``, ``code`` in
#: ``encoding``). ``sig`` carries the signature of an Azure SAS URL, and
#: ``code`` the key of an Azure Functions URL.
_SECRET_WORDS = ("sig", "code", "key")
#: Maximum length of an exception message in the report.
MAX_MESSAGE = 300
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s,]+")


def is_secret_name(name: str, extra: tuple[str, ...] = ()) -> bool:
    """Return whether ``name`` looks like the name of a secret.

    A name is secret when it contains one of jobtrace's redacted key parts
    (``password``, ``token``, ``api_key`` and the others), a part from
    ``extra``, ends in ``key``, or is one of the short secret words
    (``sig``, ``code``), ignoring case, with ``-`` read as ``_``.
    """
    normal = name.strip().lower().replace("-", "_")
    parts = (*DEFAULT_REDACTED_KEYS, *_EXTRA_SECRET_PARTS, *extra)
    return (
        normal in _SECRET_WORDS
        or normal.endswith("key")
        or any(part in normal for part in parts)
    )


def mask_url(url: str) -> str:
    """Mask the secrets of ``url``.

    The password or bare user token goes, and so do secret-looking query
    values and the whole fragment, which some services use for tokens.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, colon, _ = user.partition(":")
        # A user part without a password is often a token (a Sentry DSN's
        # public key, a Git host's access token), so it goes too.
        netloc = f"{name}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{key}={MASK if is_secret_name(key) else value}" for key, value in pairs
        )
    fragment = MASK if parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def mask_pairs(value: str, *, all_values: bool, extra: tuple[str, ...] = ()) -> str:
    """Mask the values of a ``key=value,key=value`` list.

    With ``all_values``, as for OTLP headers, every value is masked and only
    the keys show. Otherwise only values under a secret-looking key are.
    """
    masked = []
    for item in value.split(","):
        key, equals, item_value = item.partition("=")
        if not equals:
            masked.append(mask_text(item))
        elif all_values or is_secret_name(key, extra):
            masked.append(f"{key.strip()}={MASK}")
        else:
            masked.append(f"{key}={mask_text(item_value)}")
    return ",".join(masked)


def mask_text(value: str) -> str:
    """Mask the secrets of every URL inside ``value``."""
    return _URL.sub(lambda found: mask_url(found.group(0)), value)


def mask_message(message: str) -> str:
    """Return an exception message safe to print: URLs masked, length capped.

    An application's exception may quote a setting, such as a broker URL
    with its password, or a whole file.
    """
    masked = mask_text(message)
    if len(masked) > MAX_MESSAGE:
        return masked[: MAX_MESSAGE - 3] + "..."
    return masked


def mask_variable(name: str, value: str, extra: tuple[str, ...] = ()) -> str:
    """Return the value of environment variable ``name`` safe to print.

    Header variables (``OTEL_EXPORTER_OTLP_HEADERS`` and the per-signal
    ones) show their keys only. A variable whose name looks secret is
    masked whole. In ``key=value`` lists such as
    ``OTEL_RESOURCE_ATTRIBUTES``, secret-looking keys have their values
    masked. Every URL loses its password and secret query values.
    ``extra`` adds name parts, such as those of ``JOBTRACE_REDACT_KEYS``.
    """
    upper = name.upper()
    if upper.endswith("_HEADERS"):
        return mask_pairs(value, all_values=True)
    if upper == "JOBTRACE_REDACT_KEYS":
        # The names of secrets, not secrets.
        return value
    if is_secret_name(name, extra):
        return MASK if value else value
    if upper == "OTEL_RESOURCE_ATTRIBUTES":
        return mask_pairs(value, all_values=False, extra=extra)
    return mask_text(value)
