"""A Django project with Celery, set up as docs/recipes.md shows."""

from .celery import app as celery_app

__all__ = ("celery_app",)
