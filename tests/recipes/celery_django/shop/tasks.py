"""Tasks that ``app.autodiscover_tasks()`` finds in the shop app."""

from celery import shared_task


@shared_task(name="shop.add")
def add(x: int, y: int) -> int:
    return x + y
