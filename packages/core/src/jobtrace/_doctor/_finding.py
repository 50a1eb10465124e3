"""One result of a ``jobtrace doctor`` check."""

from __future__ import annotations

import dataclasses

#: Levels, most severe first. Only ``problem`` makes the command fail.
LEVELS = ("problem", "warning", "ok", "note")


@dataclasses.dataclass(frozen=True)
class Finding:
    """A line of the report: what a check found and, if needed, the fix.

    ``section`` names the check (``settings``, ``endpoint``, ``plugins``,
    ``tracers``, ``processes``). A problem must carry a fix.
    """

    section: str
    level: str
    message: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"Invalid level {self.level!r}, expected one of {LEVELS}")
        if self.level == "problem" and not self.fix:
            raise ValueError(f"The problem {self.message!r} has no fix")

    def as_dict(self) -> dict[str, str | None]:
        """Return the fields as a dict, for ``--json``."""
        return dataclasses.asdict(self)
