"""``python -m django send_welcome``: send one message, as a view would."""

from typing import Any

from django.core.management.base import BaseCommand

from mail.tasks import send_welcome


class Command(BaseCommand):
    help = "Send send_welcome(7) and print the message id."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(send_welcome.send(7).message_id)
