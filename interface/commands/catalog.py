"""``skillbase-workflow catalog consume``: apply the catalog's Kafka events until stopped."""

from __future__ import annotations

import argparse
from typing import Any

from application.settings import load_settings
from interface.kafka.consumer import CatalogConsumer
from interface.kafka.running import run_until_signalled


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("catalog", help="the catalog link")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    consume = actions.add_parser("consume", help="consume the catalog topics (SIGTERM stops)")
    consume.set_defaults(handler=run)


def run(_args: argparse.Namespace) -> int:
    settings = load_settings()
    return run_until_signalled(settings, lambda service, stop: CatalogConsumer(service, settings).run(stop))
