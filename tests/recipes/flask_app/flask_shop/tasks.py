"""Tasks of the Flask app, bound to whichever Celery app is the default."""

from celery import shared_task
from flask import current_app


@shared_task(name="flask_shop.add")
def add(x: int, y: int) -> str:
    """Add two numbers inside the Flask app context, to show the context is there."""
    return f"{current_app.name}: {x + y}"
