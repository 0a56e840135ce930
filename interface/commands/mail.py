"""``skillbase-workflow mail run``: send the outbox's emails until stopped.

Every replica may run it: one holds the advisory lock and sends, the others stand by
(ADR 0007). Without ``SKILLBASE_WORKFLOW_SMTP_HOST`` emails wait in the outbox.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from typing import Any

from application.bootstrap import bootstrap
from application.mail_worker import MailWorker
from application.settings import Settings, load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("mail", help="the mail worker")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("run", help="send emails from the outbox (SIGTERM stops)").set_defaults(handler=run)


def run(_args: argparse.Namespace) -> int:
    settings = load_settings()
    return run_worker(settings, lambda service: MailWorker(service, settings))


def run_worker(settings: Settings, make: Callable[[Any], Any]) -> int:
    """Bootstraps the service and runs ``make(service).run_until`` until SIGINT/SIGTERM."""
    service = bootstrap(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        make(service).run_until(stop, settings.worker_poll_ms / 1000)
    finally:
        service.close()
    return 0
