"""``skillbase-workflow relay run``: publish the event store to Kafka until stopped.

Every replica may run it: one holds the lock and publishes, the others stand by (ADR 0008).
"""

from __future__ import annotations

import argparse
from typing import Any

from application.settings import load_settings
from interface.kafka.relay import Relay, RelayOptions
from interface.kafka.running import run_until_signalled


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("relay", help="the outbound Kafka relay")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="publish every stored event to the output topic (SIGTERM stops)")
    run_parser.add_argument("--batch-size", type=int, default=RelayOptions.batch_size,
                            help=f"events per acknowledged batch (default {RelayOptions.batch_size})")
    run_parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    options = RelayOptions(batch_size=args.batch_size)
    return run_until_signalled(settings, lambda service, stop: Relay(service, settings, options).run(stop))
