"""RQ worker classes for the tests, without RQ's command listener or with a
fast one.

RQ listens for commands (such as stop-job) on a redis-py pubsub thread.
RQ 2.12 and 3.0 poll with a 60 s timeout, and redis-py 8.2's
``PubSubWorkerThread.stop()`` waits for the thread to end. When the thread
reads the unsubscribe reply before ``stop()`` clears its running flag, it
polls once more, and the worker's exit waits out the full timeout. That
would add a minute to the exit of some burst workers in these tests. Most
tests send no commands, so most of these classes do not start the
listener.
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


class ListeningWorker(Worker):
    """RQ's forking Worker with a command listener that polls every 0.5 s.

    The short poll bounds the wait for the listener thread at shutdown, as
    RQ 1.16's own 0.2 s poll did.
    """

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=0.5,
            daemon=True,
            # RQ 2.12 and 3.0 retry after a connection error, and RQ 1.16
            # has no such handler.
            exception_handler=getattr(self, "_pubsub_exception_handler", None),
        )
