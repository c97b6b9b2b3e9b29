"""``searchcore``: the parser assembled from the command groups, and ``main(argv)``.

``main`` returns the exit status (tests call it). User errors print one line
(``searchcore: error: ...``) and exit non-zero; no tracebacks. Each group module adds its
subcommands and returns their handlers; handlers import what is heavy when they run, so
``searchcore --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from searchcore.cli import catalog, model, search, training, upscaler
from searchcore.cli.common import Handler
from searchcore.errors import SearchError


def build_parser() -> tuple[argparse.ArgumentParser, dict[tuple[str, str | None], Handler]]:
    """The whole command line and the handler of each (command, action)."""
    p = argparse.ArgumentParser(prog="searchcore", description="Visual product search.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)
    handlers: dict[tuple[str, str | None], Handler] = {}
    for add in (
        catalog.add_commands,
        search.add_commands,
        training.add_commands,
        upscaler.add_commands,
        model.add_commands,
        search.add_demo,
    ):
        handlers.update(add(sub))
    return p, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return handlers[(args.command, getattr(args, "action", None))](args)
    except SearchError as exc:
        print(f"searchcore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("searchcore: interrupted", file=sys.stderr)
        return 130
