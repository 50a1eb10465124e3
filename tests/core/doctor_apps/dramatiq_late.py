"""A Dramatiq broker module that lists Tracing after the Retries middleware."""

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from jobtrace_dramatiq import Tracing

broker = StubBroker(middleware=[Retries(), Tracing()])
dramatiq.set_broker(broker)
