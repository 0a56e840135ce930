"""The relay against a real broker when an event cannot be published: its CloudEvent cannot
be built, it is larger than the producer's limit, or the broker refuses it as too large. The
relay never ends and never skips it: it publishes what comes before it, stays at it with an
error naming it (never its content), keeps its lock, and once the cause is gone publishes it
and everything after it, in order per entity, nothing lost."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from application.settings import load_settings
from interface.kafka import relay as relay_module
from interface.kafka.relay import Relay, relay_lag, relay_position
from tests.integration.kafka_helpers import FAST_PRODUCER, FAST_RELAY, cloudevents, kafka_settings, read_topic, until
from tests.integration.test_relay import SKILLS, per_entity_versions, store_events, stored_ids

pytestmark = pytest.mark.integration

SECRET = "learner-statement-that-must-not-be-logged"
BIG = "€" * 10_000  # 30,000 bytes of UTF-8 in the event's description


def store_big_event(app, version: int) -> int:
    """One catalog update of ~30 KB on the first skill; returns its notification id."""
    app.upsert_skill(skill_id=SKILLS[0], version=version, name="big", description=BIG, status="active")
    return app.recorder.max_notification_id()


def relay_messages(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == relay_module.__name__ and r.levelno >= level]


def assert_nothing_personal_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert SECRET not in text and "€€€" not in text, record.getMessage()


def test_an_event_that_cannot_be_mapped_holds_the_relay_at_it_until_it_can_and_then_everything_arrives_once(
    app, settings, kafka_broker, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG, logger=relay_module.__name__)
    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    store_events(app, range(1, 4))
    bad = [n.id for n in app.recorder.select_notifications(start=1, limit=100)][6]
    broken = True
    mapped = relay_module.outbound_record

    def outbound_record(notification_id, domain_event, aggregate_after):
        if broken and notification_id == bad:
            raise KeyError(SECRET)  # a mapping bug, its message quoting the event's data
        return mapped(notification_id, domain_event, aggregate_after)

    monkeypatch.setattr(relay_module, "outbound_record", outbound_record)

    async def scenario():
        nonlocal broken
        stop = asyncio.Event()
        relay, standby = Relay(app, settings, FAST_RELAY), Relay(app, settings, FAST_RELAY)
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: relay.stats.leader or task.done(), timeout=10)
        standby_task = asyncio.create_task(standby.run(stop))
        await until(lambda: relay.stats.failures >= 3 or task.done(), timeout=15)
        held = {"alive": not task.done(), "position": relay_position(app, topic)}
        await asyncio.to_thread(store_events, app, range(4, 6))  # stored while it is held
        await until(lambda: relay.stats.failures >= 5 or task.done(), timeout=15)
        held |= {"still_alive": not task.done(), "lag": relay_lag(app, topic), "error": relay.stats.last_error,
                 "standby_leader": standby.stats.leader, "standby_published": standby.stats.published}
        broken = False  # the fix is deployed / the fault was transient
        await until(lambda: relay_lag(app, topic) == 0 or task.done(), timeout=20)
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, standby_task, return_exceptions=True), 10)
        records = await read_topic(settings, topic, lambda r: len(r) >= len(stored_ids(app)))
        return held, relay, records

    held, relay, records = asyncio.run(scenario())

    assert held["alive"] and held["still_alive"], "the relay ended"
    assert held["position"] == bad - 1, "what came before the event was published, nothing after it"
    assert held["lag"] == app.recorder.max_notification_id() - (bad - 1), "the lag shows it"
    assert not held["standby_leader"] and held["standby_published"] == 0, "the held relay kept its lock"
    assert f"event {bad}" in held["error"] and "KeyError" in held["error"]
    errors = relay_messages(caplog)
    assert len(errors) >= 5 and all(f"event {bad}" in m and "KeyError" in m for m in errors)
    assert_nothing_personal_logged(caplog)
    events = cloudevents(records)
    counts = Counter(e["id"] for e in events)
    assert set(counts) == set(stored_ids(app)) and set(counts.values()) == {1}, "each event once"
    for subject, versions in per_entity_versions(events).items():
        assert versions == sorted(versions), subject
    assert relay_position(app, topic) == app.recorder.max_notification_id()


def with_environment(settings, **environment: str):
    """``settings`` with some values read from ``SKILLBASE_WORKFLOW_*`` variables instead."""
    names = {name.removeprefix("SKILLBASE_WORKFLOW_").lower() for name in environment}
    values = {k: v for k, v in msgspec.structs.asdict(settings).items() if k not in names}
    return load_settings(environment, **values)


def test_an_event_over_the_producers_size_limit_is_named_with_what_to_raise_and_published_once_raised(
    app, settings, kafka_broker, caplog
):
    caplog.set_level(logging.DEBUG, logger=relay_module.__name__)
    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    limited = with_environment(settings, SKILLBASE_WORKFLOW_KAFKA_MAX_REQUEST_BYTES="16384")
    store_events(app, range(1, 3))
    big = store_big_event(app, 3)
    store_events(app, range(4, 6))
    # Small record batches: once the limit is raised, the big event goes in a batch of its own.
    small_batches = {**FAST_PRODUCER, "max_batch_size": 4096}
    slow_retries = dataclasses.replace(FAST_RELAY, backoff_initial=10.0, backoff_max=10.0, producer=small_batches)

    async def scenario():
        stop = asyncio.Event()
        relay = Relay(app, limited, slow_retries)
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: relay.stats.failures >= 1 or task.done() or relay_lag(app, topic) == 0, timeout=15)
        held = {"alive": not task.done(), "position": relay_position(app, topic), "error": relay.stats.last_error}
        await asyncio.sleep(0.3)  # now in its 5-10 s backoff
        began = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 10)
        held["stop_seconds"] = time.monotonic() - began

        stop = asyncio.Event()  # the limit raised (and the topic's max.message.bytes with it)
        raised = Relay(app, settings, dataclasses.replace(FAST_RELAY, producer=small_batches))
        task = asyncio.create_task(raised.run(stop))
        await until(lambda: relay_lag(app, topic) == 0 or task.done(), timeout=20)
        stop.set()
        await asyncio.wait_for(task, 10)
        records = await read_topic(settings, topic, lambda r: len(r) >= len(stored_ids(app)))
        return held, records

    held, records = asyncio.run(scenario())

    assert held["alive"], "the relay ended or published the event over the limit"
    assert held["position"] == big - 1
    assert held["stop_seconds"] < 2, "stop ends a backoff at once"
    error = held["error"]
    assert f"event {big} is " in error and "over the producer's limit of 16384 bytes" in error
    assert "SKILLBASE_WORKFLOW_KAFKA_MAX_REQUEST_BYTES" in error and "max.message.bytes" in error
    size = int(error.split(f"event {big} is ", 1)[1].split(" ", 1)[0])
    assert size > 30_000
    assert any(f"event {big} is {size} bytes" in m for m in relay_messages(caplog))
    assert_nothing_personal_logged(caplog)
    events = cloudevents(records)
    counts = Counter(e["id"] for e in events)
    assert set(counts) == set(stored_ids(app)) and set(counts.values()) == {1}
    assert max(len(r.value) for r in records) > 30_000 > 4096, "larger than max_batch_size, sent alone"
    for subject, versions in per_entity_versions(events).items():
        assert versions == sorted(versions), subject


def test_a_batch_the_broker_refuses_as_too_large_is_named_held_and_sent_alone_nothing_before_it_again(
    app, settings, kafka_broker, monkeypatch, caplog
):
    """Tansu enforces no max.message.bytes, so the topic's limit is played by the producer."""
    caplog.set_level(logging.DEBUG, logger=relay_module.__name__)
    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    store_events(app, range(1, 3))
    big = store_big_event(app, 3)
    store_events(app, range(4, 7))
    topic_limit = 8192  # the topic's max.message.bytes
    refusals = []
    send_batch = AIOKafkaProducer.send_batch

    async def refusing_send_batch(self, batch, topic_, *, partition):
        if topic_ == topic and topic_limit and batch.size() > topic_limit:
            refusals.append(batch.record_count())
            refused = asyncio.get_running_loop().create_future()
            refused.set_exception(MessageSizeTooLargeError())
            return refused
        return await send_batch(self, batch, topic_, partition=partition)

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", refusing_send_batch)
    options = dataclasses.replace(FAST_RELAY, producer={**FAST_PRODUCER, "max_batch_size": 4096})

    async def scenario():
        nonlocal topic_limit
        stop = asyncio.Event()
        relay = Relay(app, settings, options)
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: relay.stats.failures >= 4 or task.done(), timeout=15)
        held = {"alive": not task.done(), "position": relay_position(app, topic), "error": relay.stats.last_error}
        topic_limit = 0  # the topic's limit raised
        await until(lambda: relay_lag(app, topic) == 0 or task.done(), timeout=20)
        stop.set()
        await asyncio.wait_for(task, 10)
        records = await read_topic(settings, topic, lambda r: len({x.value for x in r}) >= len(stored_ids(app)))
        return held, records

    held, records = asyncio.run(scenario())

    assert held["alive"]
    assert held["position"] == big - 1
    assert f"the broker refused event {big} of " in held["error"] and "MessageSizeTooLargeError" in held["error"]
    assert "max.message.bytes" in held["error"] and "SKILLBASE_WORKFLOW_KAFKA_MAX_REQUEST_BYTES" in held["error"]
    assert any(f"event {big}" in m for m in relay_messages(caplog))
    assert_nothing_personal_logged(caplog)
    assert len(refusals) >= 4 and set(refusals) == {1}, "the refused event goes alone"
    events = cloudevents(records)
    counts = Counter(e["id"] for e in events)
    assert set(counts) == set(stored_ids(app))
    sequence = {e["id"]: e["sequence"] for e in events}
    assert all(counts[i] == 1 for i, n in sequence.items() if n <= big), "nothing up to it is sent again"
    assert max(counts.values()) <= 2, "what followed it in the refused round is re-sent once, not per retry"
    for subject, versions in per_entity_versions(events).items():
        assert versions == sorted(versions), subject  # nothing of its partition got ahead of it
