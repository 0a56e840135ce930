"""The catalog consumer against a real broker: the six example events become definitions
and deployments (and their SKILLBASE_WORKFLOW_* events reach the output topic), nothing is
applied twice, poison messages go to the dead-letter topic and consumption goes on."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import pytest
from eventsourcing.persistence import OperationalError

from application.contract import event_id
from domain.errors import Conflict
from domain.ids import definition_id, deployment_id
from interface.examples import catalog_event
from interface.kafka.consumer import CatalogConsumer, tracking_name
from interface.kafka.link import start_kafka
from interface.kafka.relay import relay_lag
from tests.integration.kafka_helpers import (
    FAST_CONSUMER,
    FAST_RELAY,
    cloudevents,
    kafka_settings,
    produce,
    read_topic,
    until,
)

pytestmark = pytest.mark.integration

SKILL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90"
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"


def structured(name: str, **data_changes) -> tuple[bytes, bytes, list]:
    event = catalog_event(name)
    event["data"].update(data_changes)
    return event["data"]["id"].encode(), json.dumps(event).encode(), [
        ("content-type", b"application/cloudevents+json")
    ]


def binary(name: str) -> tuple[bytes, bytes, list]:
    """The same event in the CloudEvents Kafka binary mode: attributes in ce_* headers."""
    event = catalog_event(name)
    headers = [(f"ce_{k}", str(event[k]).encode()) for k in ("specversion", "type", "source", "id", "time", "subject")]
    return event["data"]["id"].encode(), json.dumps(event["data"]).encode(), [
        *headers, ("content-type", b"application/json")
    ]


def stored_events_of(app, aggregate_id) -> list:
    return list(app.repository.event_store.get(aggregate_id))


def applied_through(app, topic: str, count: int) -> bool:
    """The consumer's stored position on the single partition reached ``count`` messages."""
    return (app.recorder.max_tracking_id(tracking_name(topic, 0)) or 0) >= count


async def consume_until(app, settings, topic: str, messages: list, count: int, options=FAST_CONSUMER):
    """Produces ``messages``, runs a consumer until its stored position reaches ``count``,
    stops it (raising what it ended with) and returns it."""
    await produce(settings, topic, messages)
    consumer = CatalogConsumer(app, settings, options)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await until(lambda: applied_through(app, topic, count) or task.done())
    stop.set()
    await task
    return consumer


def test_the_six_example_events_make_definitions_and_deployments_and_are_published(app, settings, kafka_broker):
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    output = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,), kafka_output_topic=output,
                              kafka_dead_letter_topic=kafka_broker.new_topic("dlq"))
    # A credential before its skill; half in structured mode, half in binary mode.
    first = [structured("credential-created"), binary("skill-created"), structured("skill-updated"),
             binary("credential-updated")]
    last = [structured("credential-deleted"), binary("skill-deleted")]

    async def scenario():
        link = start_kafka(app, settings, relay_options=FAST_RELAY, consumer_options=FAST_CONSUMER)
        try:
            await produce(settings, catalog, first)
            await until(lambda: applied_through(app, catalog, 4))
            definition, deployment = app.get_definition(CREDENTIAL), app.get_deployment(SKILL)
            await produce(settings, catalog, last)
            await until(lambda: applied_through(app, catalog, 6))
            await until(lambda: relay_lag(app, output) == 0)
        finally:
            await link.stop()
        head = app.recorder.max_notification_id()
        return definition, deployment, await read_topic(settings, output, lambda r: len(r) >= head)

    definition, deployment, records = asyncio.run(scenario())

    assert definition.id == definition_id(CREDENTIAL) and definition.skill_id == SKILL
    assert definition.catalog_version == 2 and not definition.deleted
    assert definition.description.startswith("Assessed from photo evidence, a practical demonstration")
    assert [v.template for v in definition.versions.values()] == ["credential-assessment"]
    assert deployment.id == deployment_id(SKILL) and deployment.status == "active"
    assert deployment.name == "MIG welding (structural)" and deployment.catalog_version == 2
    assert deployment.pins[CREDENTIAL]["version"] == 1
    final_definition, final_deployment = app.get_definition(CREDENTIAL), app.get_deployment(SKILL)
    assert final_definition.deleted and final_definition.catalog_version == 3
    assert final_deployment.deleted and final_deployment.catalog_version == 3
    assert CREDENTIAL not in final_deployment.pins

    events = cloudevents(records)
    stored = [event_id(n.originator_id, n.originator_version)
              for n in app.recorder.select_notifications(start=1, limit=1000)]
    assert sorted(e["id"] for e in events) == sorted(stored)
    assert {e["type"] for e in events} >= {
        "SKILLBASE_WORKFLOW_DEFINITION_CREATED", "SKILLBASE_WORKFLOW_DEPLOYMENT_CREATED",
        "SKILLBASE_WORKFLOW_DEFINITION_UPDATED", "SKILLBASE_WORKFLOW_DEPLOYMENT_UPDATED",
        "SKILLBASE_WORKFLOW_DEFINITION_DELETED", "SKILLBASE_WORKFLOW_DEPLOYMENT_DELETED",
    }


def test_a_duplicate_and_a_stale_version_have_one_effect_even_across_restarts(app, settings, kafka_broker):
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=kafka_broker.new_topic("dlq"))
    created, updated = structured("skill-created"), structured("skill-updated")
    messages = [created, created, updated, created, binary("skill-created")]  # dup, then stale after newer

    async def run_consumer(group: str, count: int) -> CatalogConsumer:
        consumer = CatalogConsumer(app, kafka_settings(settings, kafka_broker, kafka_consumer_group=group),
                                   FAST_CONSUMER)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.wait_for(consumer.assigned.wait(), 20)
        await until(lambda: applied_through(app, catalog, count))
        await asyncio.sleep(0.3)  # anything it would wrongly re-apply, it does now
        stop.set()
        await task
        return consumer

    async def scenario():
        await produce(settings, catalog, messages)
        first = await run_consumer("group-a", len(messages))
        # A new group has no committed offsets: only the database position stops a replay.
        second = await run_consumer("group-b", len(messages))
        return first, second

    first, second = asyncio.run(scenario())

    history = stored_events_of(app, deployment_id(SKILL))
    assert [type(e).__name__ for e in history] == ["Created", "CatalogUpdated"]
    assert app.get_deployment(SKILL).name == "MIG welding (structural)"
    assert (first.stats.applied, first.stats.unchanged, first.stats.dead_letters) == (2, 3, 0)
    assert (second.stats.applied, second.stats.unchanged) == (0, 0)
    assert app.recorder.max_tracking_id(tracking_name(catalog, 0)) == len(messages)


def test_poison_messages_go_to_the_dead_letter_topic_with_their_reason_and_the_next_is_applied(
    app, settings, kafka_broker
):
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    dead_letters = kafka_broker.new_topic("dlq", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=dead_letters)
    unknown_type = json.loads(structured("skill-created")[1])
    unknown_type["type"] = "SKILLBASE_CATALOG_SKILL_RENAMED"
    missing_name = json.loads(structured("skill-created")[1])
    del missing_name["data"]["name"]
    key, no_id_value, no_id_headers = binary("skill-created")
    poison = [
        (b"k1", b"{not json", [("content-type", b"application/cloudevents+json")]),
        (b"k2", json.dumps(unknown_type).encode(), []),
        (b"k3", json.dumps(missing_name).encode(), []),
        (key, no_id_value, [h for h in no_id_headers if h[0] != "ce_id"]),
        structured("credential-created", workflow={"template": "no-such-template"}),
    ]
    good = structured("skill-created")

    async def scenario():
        await produce(settings, catalog, [*poison, good])
        consumer = CatalogConsumer(app, settings, FAST_CONSUMER)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await until(lambda: applied_through(app, catalog, len(poison) + 1))
        stop.set()
        await task
        return consumer, await read_topic(settings, dead_letters, lambda r: len(r) >= len(poison))

    consumer, records = asyncio.run(scenario())

    assert app.get_deployment(SKILL).name == "MIG welding"  # the good one after them
    assert consumer.stats.dead_letters == len(poison) and consumer.stats.applied == 1
    records.sort(key=lambda r: r.offset)
    reasons = [dict(r.headers)["dlq_reason"].decode() for r in records]
    assert reasons[0].startswith("bad JSON")
    assert "unknown type `SKILLBASE_CATALOG_SKILL_RENAMED`" in reasons[1]
    assert "invalid data" in reasons[2] and "name" in reasons[2]
    assert "ce_id" in reasons[3]
    assert reasons[4].startswith("InvalidInput: unknown workflow template") and "no-such-template" in reasons[4]
    assert [(r.key, r.value) for r in records] == [(k, v) for k, v, _ in poison]
    assert [int(dict(r.headers)["dlq_offset"]) for r in records] == list(range(len(poison)))
    assert all(dict(r.headers)["dlq_topic"].decode() == catalog for r in records)
    with pytest.raises(Exception, match="not found"):
        app.get_definition(CREDENTIAL)


def test_a_poison_message_too_big_for_the_dead_letter_topic_goes_there_without_its_value(
    app, settings, kafka_broker
):
    """The dead-letter record (the value and headers, plus ours) was refused for size on every
    attempt, as if the topic were down: the partition was held for ever."""
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    dead_letters = kafka_broker.new_topic("dlq", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=dead_letters, kafka_max_request_bytes=16 * 1024)
    big_poison = (b"k1", b"{not json" + b" " * 20_000, [("content-type", b"application/cloudevents+json")])
    messages = [big_poison, structured("skill-created")]

    async def scenario():
        consumer = await consume_until(app, settings, catalog, messages, len(messages))
        return consumer, await read_topic(settings, dead_letters, lambda r: len(r) >= 1)

    consumer, (record,) = asyncio.run(scenario())

    assert consumer.stats.dead_letters == 1 and app.get_deployment(SKILL).name == "MIG welding"
    headers = dict(record.headers)
    assert record.key == b"k1" and record.value is None
    assert headers["dlq_value_bytes"] == str(len(big_poison[1])).encode() and headers["dlq_offset"] == b"0"
    assert headers["dlq_reason"].decode().startswith("bad JSON") and b"left out" in headers["dlq_reason"]
    assert headers["content-type"] == b"application/cloudevents+json"


def test_a_credential_whose_skill_was_deleted_first_is_applied_and_the_partition_moves_on(
    app, settings, kafka_broker
):
    # Across topics a skill's delete can overtake a credential's create; that credential used
    # to raise Conflict on every attempt and hold its partition for ever.
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=kafka_broker.new_topic("dlq"))
    other_skill = str(uuid.uuid4())
    messages = [structured("skill-created"), structured("skill-deleted"), structured("credential-created"),
                structured("skill-created", id=other_skill)]

    consumer = asyncio.run(consume_until(app, settings, catalog, messages, len(messages)))

    assert consumer.stats.dead_letters == 0 and consumer.stats.retries == 0
    assert app.get_definition(CREDENTIAL).skill_id == SKILL
    assert app.get_deployment(SKILL).deleted and CREDENTIAL not in app.get_deployment(SKILL).pins
    assert app.get_deployment(other_skill).is_active


def test_a_conflict_on_every_attempt_goes_to_the_dead_letter_topic_and_the_next_is_applied(
    app, settings, kafka_broker, monkeypatch
):
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    dead_letters = kafka_broker.new_topic("dlq", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=dead_letters)
    attempts = []

    def always_conflicting(**kwargs):
        attempts.append(kwargs["credential_id"])
        raise Conflict("refused every time")

    monkeypatch.setattr(app, "upsert_credential", always_conflicting)
    options = dataclasses.replace(FAST_CONSUMER, conflict_attempts=3, backoff_max=0.05)

    async def scenario():
        consumer = await consume_until(app, settings, catalog,
                                       [structured("credential-created"), structured("skill-created")], 2, options)
        return consumer, await read_topic(settings, dead_letters, lambda r: len(r) >= 1)

    consumer, records = asyncio.run(scenario())

    assert attempts == [CREDENTIAL] * 3
    assert consumer.stats.dead_letters == 1 and consumer.stats.retries == 2 and consumer.stats.applied == 1
    assert dict(records[0].headers)["dlq_reason"].decode() == "Conflict on each of 3 attempts: refused every time"
    assert app.get_deployment(SKILL).name == "MIG welding"


def test_a_fetch_error_the_client_does_not_retry_restarts_the_consumer_instead_of_ending_it(
    app, settings, kafka_broker, monkeypatch
):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import CorruptRecordException

    catalog = kafka_broker.new_topic("catalog", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=kafka_broker.new_topic("dlq"))
    real_getmany, failures = AIOKafkaConsumer.getmany, [CorruptRecordException("bad batch")]

    async def failing_once(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return await real_getmany(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", failing_once)

    consumer = asyncio.run(consume_until(app, settings, catalog, [structured("skill-created")], 1))  # raises if it ended

    assert failures == [] and consumer.stats.applied == 1
    assert app.get_deployment(SKILL).name == "MIG welding"


def test_a_database_error_is_retried_and_never_skips_the_message(app, settings, kafka_broker, monkeypatch):
    catalog = kafka_broker.new_topic("catalog", partitions=1)
    settings = kafka_settings(settings, kafka_broker, kafka_catalog_topics=(catalog,),
                              kafka_dead_letter_topic=kafka_broker.new_topic("dlq"))
    real_upsert, failures = app.upsert_skill, [OperationalError("connection lost"), OperationalError("again")]

    def flaky_upsert(**kwargs):
        if failures:
            raise failures.pop(0)
        return real_upsert(**kwargs)

    monkeypatch.setattr(app, "upsert_skill", flaky_upsert)

    consumer = asyncio.run(consume_until(app, settings, catalog,
                                         [structured("skill-created"), structured("skill-updated")], 2))

    assert consumer.stats.retries == 2 and consumer.stats.applied == 2 and consumer.stats.dead_letters == 0
    assert [type(e).__name__ for e in stored_events_of(app, deployment_id(SKILL))] == ["Created", "CatalogUpdated"]
