"""The ``jobtrace`` command line."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``jobtrace`` command and return its exit code."""
    parser = argparse.ArgumentParser(prog="jobtrace")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="run producers and Celery, RQ and Dramatiq workers on an embedded "
        "Redis and print their traces",
    )
    arguments = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if arguments.command == "demo":
        from jobtrace import _demo

        return _demo.run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
