"""What the relay, the consumer and the leader lock share when something fails: jittered
backoff (``application.backoff``), a sleep that a stop request cuts short, and a producer
stop that never hangs."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from application.backoff import Backoff

__all__ = ["Backoff", "sleep_unless_stopped", "stop_producer"]

log = logging.getLogger(__name__)


async def sleep_unless_stopped(seconds: float, stop: asyncio.Event) -> None:
    """Sleeps ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def stop_producer(producer: AIOKafkaProducer | None, timeout: float = 5.0) -> None:
    """Stops a producer without waiting forever on a broker that is down."""
    if producer is None:
        return
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except Exception as error:  # noqa: BLE001 - it is being thrown away
        log.debug("producer stop: %r", error)
