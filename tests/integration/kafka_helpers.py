"""What the relay and consumer tests share: settings for a topic, reading a topic back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from application.settings import Settings
from interface.kafka.consumer import ConsumerOptions
from interface.kafka.relay import RelayOptions
from tests.fixtures.kafka import GROUP_CONSUMER_KWARGS

# Fast failure detection and retries: the broker is on loopback.
FAST_PRODUCER = {"request_timeout_ms": 2000, "retry_backoff_ms": 50, "linger_ms": 2}
FAST_RELAY = RelayOptions(
    batch_size=50, idle_wait=0.1, leader_poll=0.2, heartbeat=0.5, backoff_initial=0.05, backoff_max=0.5,
    send_timeout=5.0, producer=FAST_PRODUCER,
)
FAST_CONSUMER = ConsumerOptions(
    poll_timeout_ms=100, backoff_initial=0.05, backoff_max=0.5, consumer=GROUP_CONSUMER_KWARGS,
    producer=FAST_PRODUCER,
)


def kafka_settings(settings: Settings, broker: Any, **overrides: Any) -> Settings:
    values = {
        "kafka_bootstrap_servers": broker.bootstrap_servers,
        "kafka_enable_idempotence": False,
        "kafka_consumer_group": f"g-{uuid.uuid4().hex[:8]}",
        **overrides,
    }
    return msgspec.structs.replace(settings, **values)


async def read_topic(
    settings: Settings, topic: str, done: Callable[[list[Any]], bool], timeout: float = 20.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning, until ``done(records)`` or the timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while not done(records) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def cloudevents(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in sorted(records, key=lambda r: (r.partition, r.offset))]


async def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None, list]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
