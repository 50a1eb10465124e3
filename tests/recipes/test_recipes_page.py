"""docs/recipes.md and the tests that run its recipes stay in sync.

Each ``##`` section of the page names its tests as ``tests/...py::test_name``
and the files that hold its setup as ``tests/...`` paths. Every line of the
section's Python blocks that mentions jobtrace or ``config_from_object``
must appear, stripped of indentation, in one of those files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "recipes.md"
CHECKED_WORDS = ("jobtrace", "config_from_object")


def sections() -> dict[str, str]:
    """Split the page into its ``##`` sections, by heading."""
    parts = re.split(r"^## (.+)$", PAGE.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def configuration_lines(text: str) -> list[str]:
    """Return the checked lines of the Python blocks in ``text``, stripped."""
    lines = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            stripped = line.strip()
            if not stripped.startswith("#") and any(
                word in stripped for word in CHECKED_WORDS
            ):
                lines.append(stripped)
    return lines


def references(text: str) -> list[str]:
    """Return the ``tests/...`` paths and test ids in backticks in ``text``."""
    return re.findall(r"`(tests/[^`\s]+)`", text)


SECTIONS = sections()


def test_page_has_recipes() -> None:
    """The page has the recipes the README points to."""
    for heading in (
        "Celery",
        "Celery with Django",
        "Celery with Flask",
        "rq worker",
        "django-rq",
        "Dramatiq",
        "django_dramatiq",
        "opentelemetry-instrument",
    ):
        assert heading in SECTIONS


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_named_tests_exist(heading: str) -> None:
    """Every file and test that a section names exists."""
    named = references(SECTIONS[heading])
    assert named, f"section {heading!r} names no test"
    for reference in named:
        path, _, test_name = reference.partition("::")
        assert (ROOT / path).exists(), reference
        if test_name:
            assert f"def {test_name}(" in (ROOT / path).read_text(), reference


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_configuration_lines_are_tested(heading: str) -> None:
    """Every configuration line of a recipe is in the files its tests run."""
    text = SECTIONS[heading]
    paths = {reference.partition("::")[0] for reference in references(text)}
    sources = [(ROOT / path).read_text().splitlines() for path in paths]
    tested = {line.strip() for source in sources for line in source}
    for line in configuration_lines(text):
        assert line in tested, f"{heading}: {line!r} is in no tested source"
