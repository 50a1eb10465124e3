"""Dramatiq adapter for jobtrace.

This package reserves the import name. The adapter is not implemented yet,
so importing it does nothing and :func:`instrument` raises.
"""

from __future__ import annotations

__all__ = ["instrument"]


def instrument() -> None:
    """Raise, because this adapter is not implemented yet."""
    raise NotImplementedError("jobtrace-dramatiq is not implemented yet")
