"""The ``jobtrace`` command line."""

from __future__ import annotations

import argparse
import logging
import math
import sys

#: Maximum value of ``--timeout``, in seconds.
MAX_TIMEOUT = 60.0


def _timeout(text: str) -> float:
    """Parse ``--timeout``: a finite number of seconds above 0, at most 60."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {MAX_TIMEOUT:.0f}"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the ``jobtrace`` command and return its exit code."""
    parser = argparse.ArgumentParser(prog="jobtrace")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="run producers and Celery, RQ and Dramatiq workers on an embedded "
        "Redis and print their traces",
    )
    doctor = commands.add_parser(
        "doctor",
        help="check the settings, plugins, exporter endpoint and other tracers "
        "of this environment, and exit 1 when a check finds a problem",
    )
    doctor.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, as the worker does (the Celery app module, "
        "the RQ settings module or the Dramatiq broker module), then report "
        "what it instrumented; may be repeated",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument(
        "--timeout",
        type=_timeout,
        default=3.0,
        metavar="SECONDS",
        help="maximum seconds that the endpoint check waits, above 0 and at "
        "most 60 (default: 3)",
    )
    arguments = parser.parse_args(argv)

    if arguments.command == "doctor":
        from jobtrace import _doctor

        # No logging setup here: the doctor reports whether the imported
        # application configures logging, as a worker process would see it.
        try:
            return _doctor.run(
                arguments.app, as_json=arguments.json, timeout=arguments.timeout
            )
        except KeyboardInterrupt:
            # Ctrl-C: one line instead of a traceback, and the shell's code.
            print("jobtrace doctor: interrupted", file=sys.stderr)
            return 130
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if arguments.command == "demo":
        from jobtrace import _demo

        return _demo.run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
