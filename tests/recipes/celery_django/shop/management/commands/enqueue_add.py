"""``python -m django enqueue_add``: enqueue one task, as a view would."""

from typing import Any

from django.core.management.base import BaseCommand

from shop.tasks import add


class Command(BaseCommand):
    help = "Enqueue shop.add(2, 3) and print the task id."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(add.delay(2, 3).id)
