"""``skillbase-workflow``: one entry point, a subcommand per module of
``interface.commands``. Every subcommand reads the same settings (``SKILLBASE_WORKFLOW_*``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What an operator mends, not a bug: a bad setting (ValueError from the settings), a
# database or file store that does not answer. One line and exit 1, not a traceback.
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
COMMANDS = ("demo", "serve", "token", "projections", "audit", "relay", "catalog", "mail", "timers", "files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillbase-workflow",
        description="The skillbase workflow service. Settings come from SKILLBASE_WORKFLOW_* variables.",
    )
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG (also shows the traceback of a failure), INFO, WARNING (default), ERROR or CRITICAL")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"interface.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (*OPERATOR_ERRORS, *_database_errors()) as error:
        if args.log_level == "DEBUG":
            raise
        print(f"error: {type(error).__name__}: {error}".rstrip(), file=sys.stderr)
        return 1


def _database_errors() -> tuple[type[BaseException], ...]:
    import psycopg
    from eventsourcing import persistence

    return (psycopg.OperationalError, persistence.OperationalError, persistence.InterfaceError)


if __name__ == "__main__":
    sys.exit(main())
