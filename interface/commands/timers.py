"""``skillbase-workflow timers run``: fire due timers, reminders and overdue marks, and
deliver kept messages, until stopped. Every replica may run one (ADR 0007)."""

from __future__ import annotations

import argparse
from typing import Any

from application.settings import load_settings
from application.timers.scheduler import Scheduler
from interface.commands.mail import run_worker


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("timers", help="the scheduler of timers, reminders and kept messages")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("run", help="fire what falls due (SIGTERM stops)").set_defaults(handler=run)


def run(_args: argparse.Namespace) -> int:
    return run_worker(load_settings(), Scheduler)
