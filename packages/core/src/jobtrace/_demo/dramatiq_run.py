"""The Dramatiq part of ``jobtrace demo``: a traced producer and a real worker.

The demo sends Dramatiq messages from a simulated request, then runs the
``dramatiq`` command with one worker process on the demo's Redis server. It
stops the worker with SIGTERM once the runs have arrived, which is also how
the worker process gets to flush its spans before it exits.
"""

from __future__ import annotations

from collections.abc import Callable

from jobtrace._demo import processes
from jobtrace._receiver import OtlpReceiver, ReceivedSpan

#: Process spans of the demo's messages: add, fail, two attempts of flaky,
#: and a pipeline of two steps.
EXPECTED_PROCESS_SPANS = 6
WAIT_SECONDS = 60.0


def produce_and_run(
    out: Callable[[str], object], receiver: OtlpReceiver, env: dict[str, str]
) -> None:
    """Send the demo's messages, then run a worker until their spans arrive."""
    from dramatiq import pipeline

    import jobtrace
    from jobtrace._demo import dramatiq_actors as actors

    tracer = jobtrace.tracer()
    with tracer.start_as_current_span("POST /invoices"):
        sent = [
            ("dramatiq add(2, 3)", actors.add.send(2, 3)),
            ("dramatiq fail()", actors.fail.send()),
            ("dramatiq flaky()", actors.flaky.send()),
        ]
        # The pipeline passes double's result to add as its last argument.
        second = actors.add.message_with_options(args=(3,))
        steps = pipeline([actors.double.message(2), second]).run()
        sent.append(("dramatiq double(2) | add(3)", steps.messages[0]))
    jobtrace.flush()
    for call, message in sent:
        out(f"{call} sent  (message {message.message_id})")

    worker = processes.start_dramatiq_worker(
        "jobtrace._demo.dramatiq_actors", actors.QUEUE, env
    )
    out(f"Worker: dramatiq, 1 process with 2 threads, pid {worker.pid}")
    try:
        receiver.wait_for(_all_runs_arrived, timeout=WAIT_SECONDS)
    except TimeoutError:
        out(f"Dramatiq runs did not arrive within {WAIT_SECONDS:.0f} s.")
    finally:
        processes.stop_worker(worker)
        actors.broker.close()


def _all_runs_arrived(spans: list[ReceivedSpan]) -> bool:
    runs = [
        span
        for span in spans
        if span.name.startswith("process ")
        and span.attributes.get("messaging.system") == "dramatiq"
    ]
    return len(runs) >= EXPECTED_PROCESS_SPANS
