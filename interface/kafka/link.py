"""The service's Kafka link as one handle: the outbound relay and the catalog consumer,
run as tasks on the caller's event loop (``serve``'s lifespan, or the CLI commands).

    link = start_kafka(service, settings)   # inside a running event loop
    ...
    await link.stop()
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from application.settings import Settings
from interface.kafka.consumer import CatalogConsumer, ConsumerOptions
from interface.kafka.relay import Relay, RelayOptions

log = logging.getLogger(__name__)


@dataclass
class KafkaLink:
    relay: Relay | None
    consumer: CatalogConsumer | None
    stopping: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def positions(self) -> dict[str, int]:
        """Reader name -> position in the event log (for lag metrics)."""
        return {self.relay.name: self.relay.stats.position} if self.relay else {}

    async def wait(self) -> None:
        """Until every task ends (after ``stop()``, or when one fails)."""
        await asyncio.gather(*self.tasks)

    async def stop(self, timeout: float = 20.0) -> None:
        """Stops both loops: the message in hand is finished or left for the next run."""
        self.stopping.set()
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


def start_kafka(
    service: Any,
    settings: Settings,
    *,
    relay: bool = True,
    consume: bool = True,
    relay_options: RelayOptions | None = None,
    consumer_options: ConsumerOptions | None = None,
) -> KafkaLink:
    """Starts the relay and the catalog consumer on the running loop; ``await .stop()``."""
    if not settings.kafka_enabled:
        raise ValueError("Kafka is not configured (SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS is empty)")
    stopping = asyncio.Event()
    link = KafkaLink(
        relay=Relay(service, settings, relay_options) if relay else None,
        consumer=CatalogConsumer(service, settings, consumer_options) if consume else None,
        stopping=stopping,
    )
    for name, runner in (("kafka-relay", link.relay), ("kafka-catalog-consumer", link.consumer)):
        if runner is not None:
            task = asyncio.get_running_loop().create_task(runner.run(stopping), name=name)
            task.add_done_callback(_report)
            link.tasks.append(task)
    return link


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped with an error", task.get_name(), exc_info=task.exception())
