"""``skillbase-workflow audit history ID | as-of ID (--version N | --at TIME) | log [--after N]``.

Prints JSON lines: an aggregate's events with who/what/when, its state at a version or a
time, or the global log from a position as the CloudEvents the service publishes.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from application.bootstrap import bootstrap
from application.contract import encode
from application.queries import audit
from application.settings import load_settings
from domain.errors import WorkflowError

_encoder = msgspec.json.Encoder()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="event history, past states and the global log")
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    history = commands.add_parser("history", help="every event of one aggregate, in order")
    history.add_argument("aggregate_id", type=UUID)
    history.set_defaults(handler=show_history)
    as_of = commands.add_parser("as-of", help="an aggregate as it was at a version or a time")
    as_of.add_argument("aggregate_id", type=UUID)
    when = as_of.add_mutually_exclusive_group(required=True)
    when.add_argument("--version", type=int)
    when.add_argument("--at", type=datetime.fromisoformat, help="ISO 8601 time with a zone")
    as_of.set_defaults(handler=show_as_of)
    log = commands.add_parser("log", help="the global log from a position, as CloudEvents")
    log.add_argument("--after", type=int, default=0)
    log.add_argument("--limit", type=int, default=100)
    log.set_defaults(handler=show_log)


def show_history(args: argparse.Namespace) -> int:
    return _run(lambda app: [_print(entry) for entry in audit.history(app, args.aggregate_id)])


def show_as_of(args: argparse.Namespace) -> int:
    return _run(lambda app: _print(audit.as_of(app, args.aggregate_id, version=args.version, at=args.at)))


def show_log(args: argparse.Namespace) -> int:
    def run(app: Any) -> None:
        for event in audit.global_log(app, after=args.after, limit=args.limit):
            sys.stdout.write(encode(event).decode() + "\n")
    return _run(run)


def _print(value: Any) -> None:
    sys.stdout.write(_encoder.encode(value).decode() + "\n")


def _run(action: Any) -> int:
    app = bootstrap(load_settings())
    try:
        action(app)
    except WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        app.close()
    return 0
