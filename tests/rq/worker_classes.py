"""RQ worker classes for the tests, without RQ's command listener.

RQ listens for commands (such as stop-job) on a redis-py pubsub thread that
polls with a 60 s timeout. With redis-py 8.2, stopping that thread while an
unsubscribe reply is on its way can wait out the full timeout, which would
add a minute to the exit of most burst workers in these tests. The tests
send no commands, so these classes do not start the listener.
"""

from __future__ import annotations

from rq.worker import SimpleWorker, Worker


class WithoutCommandListener:
    """Mixin that skips the subscription to the worker's command channel."""

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass


class ForkingWorker(WithoutCommandListener, Worker):
    """RQ's forking Worker, without the command listener."""


class InProcessWorker(WithoutCommandListener, SimpleWorker):
    """RQ's SimpleWorker, without the command listener."""
