"""The Tansu broker the suite starts: produce, consume in a group, stop and start again."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from application.settings import Settings
from interface.kafka.client_config import consumer_config, producer_config
from interface.kafka.dead_letter import dead_letter_record
from tests.fixtures.kafka import GROUP_CONSUMER_KWARGS

pytestmark = pytest.mark.integration


def settings_for(broker, group: str = "skillbase-workflow") -> Settings:
    return Settings(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_enable_idempotence=False,
        kafka_consumer_group=group,
    )


async def consume(settings: Settings, topic: str, count: int, timeout: float = 20.0):
    consumer = AIOKafkaConsumer(
        topic, **consumer_config(settings), **GROUP_CONSUMER_KWARGS
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


def test_records_come_back_to_a_group_with_keys_and_headers(kafka_broker):
    topic = kafka_broker.new_topic("smoke", partitions=3)
    settings = settings_for(kafka_broker, group=f"g-{uuid.uuid4().hex[:8]}")
    sent = [
        (
            f"entity-{n % 4}".encode(),
            f"value-{n}".encode(),
            [("ce_id", str(n).encode()), ("x", b"\x00\xff")],
        )
        for n in range(12)
    ]

    async def scenario():
        producer = AIOKafkaProducer(**producer_config(settings))
        await producer.start()
        try:
            for key, value, headers in sent:
                await producer.send_and_wait(topic, value, key=key, headers=headers)
            first = await consume(settings, topic, len(sent))
            await producer.send_and_wait(topic, b"after-commit", key=b"entity-0")
            second = await consume(settings, topic, 1)
        finally:
            await producer.stop()
        return first, second

    first, second = asyncio.run(scenario())

    assert sorted((r.key, r.value, list(r.headers)) for r in first) == sorted(
        (k, v, h) for k, v, h in sent
    )
    by_key: dict[bytes, list[bytes]] = {}
    for record in sorted(first, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(record.value)
    for key, values in by_key.items():  # one key, one partition: order kept
        assert values == [v for k, v, _ in sent if k == key]
    assert [(r.key, r.value) for r in second] == [(b"entity-0", b"after-commit")]


def test_produce_auto_creates_a_topic_with_four_partitions(kafka_broker):
    topic = f"auto.{uuid.uuid4().hex[:12]}"

    async def scenario():
        producer = AIOKafkaProducer(**producer_config(settings_for(kafka_broker)))
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"v", key=b"k")
        finally:
            await producer.stop()

    asyncio.run(scenario())
    assert kafka_broker.topics()[topic] == 4


def test_a_dead_letter_keeps_the_original_record_and_says_why(kafka_broker):
    topic = kafka_broker.new_topic("dead-letter", partitions=1)
    settings = settings_for(kafka_broker, group=f"g-{uuid.uuid4().hex[:8]}")
    value, headers = dead_letter_record(
        "skillbase.catalog",
        2,
        41,
        b"k",
        b"{not json",
        [("ce_id", b"1")],
        "bad JSON: (byte 1)",
    )

    async def scenario():
        producer = AIOKafkaProducer(**producer_config(settings))
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=b"k", headers=headers)
        finally:
            await producer.stop()
        return await consume(settings, topic, 1)

    [record] = asyncio.run(scenario())
    assert (record.key, record.value) == (b"k", b"{not json")
    got = dict(record.headers)
    assert got["ce_id"] == b"1"
    assert got["dlq_reason"] == b"bad JSON: (byte 1)"
    assert (got["dlq_topic"], got["dlq_partition"], got["dlq_offset"]) == (
        b"skillbase.catalog",
        b"2",
        b"41",
    )


def test_the_broker_stops_and_starts_on_the_same_port_with_its_topics_empty(
    kafka_broker,
):
    topic = kafka_broker.new_topic("restart", partitions=2)
    settings = settings_for(kafka_broker, group=f"g-{uuid.uuid4().hex[:8]}")
    port = kafka_broker.port

    async def before(producer):
        await producer.send_and_wait(topic, b"before", key=b"k")

    async def scenario():
        producer = AIOKafkaProducer(
            **producer_config(settings), request_timeout_ms=3000
        )
        await producer.start()
        try:
            await before(producer)
            await asyncio.to_thread(kafka_broker.stop)
            with pytest.raises(TimeoutError):  # down: nothing acknowledges
                await asyncio.wait_for(
                    producer.send_and_wait(topic, b"down", key=b"k"), 2
                )
            await asyncio.to_thread(kafka_broker.start)
            # The same producer, connected across the restart, delivers again.
            await asyncio.wait_for(
                producer.send_and_wait(topic, b"after", key=b"k"), 15
            )
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
        await admin.start()
        try:
            listed = await admin.list_topics()
        finally:
            await admin.close()
        return listed, await consume(settings, topic, 2, timeout=10)

    listed, records = asyncio.run(scenario())

    assert kafka_broker.port == port and kafka_broker.running
    assert topic in listed and kafka_broker.topics()[topic] == 2
    # Memory storage: "before" died with the old process. The producer kept retrying
    # "down" (its caller gave up waiting, the batch stayed queued) and delivered it first.
    assert [r.value for r in records] == [b"down", b"after"]
