"""What the relay, the consumer and the leader lock share when something fails: jittered
backoff, a sleep that a stop request cuts short, and a producer stop that never hangs."""

from __future__ import annotations

import asyncio
import logging
import random

from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)


class Backoff:
    """Jittered exponential delays: initial, x2 each failure, capped; reset on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.failures = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * 2**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


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
