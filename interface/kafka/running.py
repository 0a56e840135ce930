"""Running a Kafka loop as a command: until SIGINT or SIGTERM, then a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from application.bootstrap import bootstrap
from application.settings import Settings

log = logging.getLogger(__name__)


def run_until_signalled(settings: Settings, start: Callable[[Any, asyncio.Event], Any]) -> int:
    """Bootstraps the service, runs ``start(service, stop)`` until a signal sets ``stop``."""
    if not settings.kafka_enabled:
        log.error("Kafka is not configured: set SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS")
        return 2
    service = bootstrap(settings)
    try:
        return asyncio.run(_main(service, start))
    finally:
        service.close()


async def _main(service: Any, start: Callable[[Any, asyncio.Event], Any]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not every loop can (Windows raises NotImplementedError, a loop outside the main
        # thread RuntimeError); there Ctrl-C still ends the process, only less gracefully.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await start(service, stop)
    return 0
