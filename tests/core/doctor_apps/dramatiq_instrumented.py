"""A Dramatiq broker module that calls jobtrace_dramatiq.instrument()."""

import dramatiq
from dramatiq.brokers.stub import StubBroker

import jobtrace_dramatiq

broker = StubBroker()
dramatiq.set_broker(broker)
jobtrace_dramatiq.instrument()
