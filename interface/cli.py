"""``skillbase-workflow``: one entry point, a subcommand per module of
``interface.commands``. Every subcommand reads the same settings (``SKILLBASE_WORKFLOW_*``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("demo", "serve", "token", "projections", "audit", "relay", "catalog", "mail", "timers", "files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillbase-workflow",
        description="The skillbase workflow service. Settings come from SKILLBASE_WORKFLOW_* variables.",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"interface.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
