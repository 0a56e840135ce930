"""``skillbase-workflow files housekeeping [--grace 24h] [--dry-run]``.

Compares the file store with the ``FileAttached`` facts of the event log: removes files no
event refers to once they are older than the grace period, reports referenced files that
are missing from the disk, sweeps ``.partial`` files left by crashed writes. Prints one line
per thing it did (or would do) and a summary. Exit status 0; 2 when referenced files are
missing (someone should look); 1 when the store or the database is unavailable.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from typing import Any

from application.bootstrap import bootstrap, open_file_store
from application.files.housekeeping import DEFAULT_GRACE, housekeeping
from application.settings import load_settings
from domain.errors import WorkflowError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` (seconds without a unit)."""
    found = _DURATION.match(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 24h, 7d)")
    try:
        return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    except OverflowError:
        raise argparse.ArgumentTypeError(f"duration too long: {text!r}") from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("files", help="the evidence file store")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    clean = actions.add_parser(
        "housekeeping", help="remove unreferenced files past the grace period, report missing ones, sweep partials")
    clean.add_argument("--grace", type=duration, default=DEFAULT_GRACE,
                       help="leave orphans and partials younger than this (default 24h; e.g. 30m, 7d)")
    clean.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")
    clean.set_defaults(handler=run_housekeeping)


def run_housekeeping(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = open_file_store(settings)
    service = bootstrap(settings)
    try:
        report = housekeeping(store, service.file_references, grace=args.grace, dry_run=args.dry_run,
                              lock=service.file_lock)
    except WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        service.close()
    for line in report.lines():
        print(line)
    return 2 if report.missing else 0
