"""Actors that django_dramatiq finds in the mail app's tasks module."""

import os

import dramatiq


@dramatiq.actor(queue_name=os.environ["TEST_QUEUE"], max_retries=0)
def send_welcome(user_id: int) -> None:
    """Pretend to send a welcome mail."""
