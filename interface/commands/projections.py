"""``skillbase-workflow projections run | rebuild [NAME…] | status``.

``run`` follows the log with every projection (or the ones named) until interrupted; with
several replicas running, one runner per projection leads and the others stand by.
``rebuild`` builds read models from zero into new tables and switches them in, printing
progress and events per second. ``status`` prints position, log head and lag.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from application.bootstrap import bootstrap
from application.settings import load_settings
from projections.follow import check_batch_size
from projections.log import EventLog
from projections.rebuild import RebuildProgress, rebuild
from projections.registry import PROJECTIONS, selected
from projections.service import start_projections
from projections.status import status

NAMES_HELP = f"one of {', '.join(PROJECTIONS)}; all if none"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("projections", help="run, rebuild or inspect the read models")
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = commands.add_parser("run", help="follow the event log and keep the read models current")
    run_parser.add_argument("names", nargs="*", metavar="NAME", help=NAMES_HELP)
    run_parser.add_argument("--batch-size", type=_batch_size, default=1000)
    run_parser.set_defaults(handler=run)
    rebuild_parser = commands.add_parser("rebuild", help="rebuild read models from zero, then switch")
    rebuild_parser.add_argument("names", nargs="*", metavar="NAME", help=NAMES_HELP)
    rebuild_parser.add_argument("--batch-size", type=_batch_size, default=5000)
    rebuild_parser.set_defaults(handler=run_rebuild)
    status_parser = commands.add_parser("status", help="position, log head and lag per projection")
    status_parser.set_defaults(handler=show_status)


def _batch_size(text: str) -> int:
    try:
        return check_batch_size(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a batch size: {text!r} (a whole number, at least 1)") from error


def _app() -> Any:
    return bootstrap(load_settings())


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    app = bootstrap(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    handle = start_projections(app, settings, names=args.names or None, batch_size=args.batch_size)
    print(f"following the log with: {', '.join(r.name for r in handle.runners)} (Ctrl-C stops)", file=sys.stderr)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    handle.stop()
    app.close()
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    app = _app()
    event_log = EventLog.of(app)
    for projection in selected(args.names or None):
        final = rebuild(event_log, projection, batch_size=args.batch_size, progress=_print_progress)
        print(f"\r{_line(final)}  done{' ' * 10}")
    app.close()
    return 0


def _line(progress: RebuildProgress) -> str:
    share = progress.position / progress.head if progress.head else 1.0
    filled = int(share * 30)
    return (f"{progress.name:<14} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%} "
            f"position {progress.position}/{progress.head}  {progress.events} events  "
            f"{progress.events_per_second:,.0f} events/s  {progress.seconds:.1f}s  {progress.phase}")


def _print_progress(progress: RebuildProgress) -> None:
    print(f"\r{_line(progress)}", end="", flush=True)


def show_status(_args: argparse.Namespace) -> int:
    app = _app()
    rows = status(EventLog.of(app), selected(None))
    print(f"{'projection':<14} {'position':>10} {'head':>10} {'lag':>8}  leader")
    for row in rows:
        position = "-" if row.position is None else str(row.position)
        lag = "-" if row.lag is None else str(row.lag)
        print(f"{row.name:<14} {position:>10} {row.head:>10} {lag:>8}  {row.leader or 'none'}")
    app.close()
    return 0
