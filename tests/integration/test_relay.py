"""The outbound relay against a real broker: every stored event reaches the topic, the
position moves only after the broker's ack, a crash or an outage loses nothing, one relay
among replicas publishes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict

import pytest

from application.contract import event_id
from interface.kafka.relay import Relay, relay_lag, relay_position
from tests.integration.kafka_helpers import (
    FAST_RELAY,
    cloudevents,
    kafka_settings,
    read_topic,
    until,
)

pytestmark = pytest.mark.integration

SKILLS = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(4)]


def store_events(app, versions: range) -> int:
    """Catalog updates on four skills, one event each; returns how many were stored."""
    before = app.recorder.max_notification_id() or 0
    for version in versions:
        for skill in SKILLS:
            app.upsert_skill(skill_id=skill, version=version, name=f"skill v{version}", description="",
                             status="active")
    return (app.recorder.max_notification_id() or 0) - before


def stored_ids(app) -> list[str]:
    return [event_id(n.originator_id, n.originator_version)
            for n in app.recorder.select_notifications(start=1, limit=100_000)]


def per_entity_versions(events) -> dict[str, list[int]]:
    """Each entity's versions in topic order, first occurrence of each id only."""
    seen, versions = set(), defaultdict(list)
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            versions[event["subject"]].append(event["data"]["state"]["version"])
    return versions


def test_every_stored_event_is_published_as_its_cloudevent_and_the_position_follows(app, settings, kafka_broker):
    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    stored = store_events(app, range(1, 6))

    async def scenario():
        stop = asyncio.Event()
        relay = Relay(app, settings, FAST_RELAY)
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: relay_lag(app, topic) == 0)
        more = await asyncio.to_thread(store_events, app, range(6, 8))  # while it runs
        await until(lambda: relay_lag(app, topic) == 0)
        records = await read_topic(settings, topic, lambda r: len(r) >= stored + more)
        stop.set()
        await task
        return records, more

    records, more = asyncio.run(scenario())

    events = cloudevents(records)
    assert sorted(e["id"] for e in events) == sorted(stored_ids(app))
    assert len(events) == stored + more
    assert relay_position(app, topic) == app.recorder.max_notification_id()
    record = records[0]
    headers = dict(record.headers)
    event = json.loads(record.value)
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["ce_type"].decode() == event["type"]
    assert {e["type"] for e in events} == {"SKILLBASE_WORKFLOW_DEPLOYMENT_CREATED", "SKILLBASE_WORKFLOW_DEPLOYMENT_UPDATED"}
    assert headers["ce_id"].decode() == event["id"]
    assert record.key.decode() == event["data"]["state"]["id"] == event["subject"].split("/", 1)[1]
    assert event["source"] == "/skillbase/workflow" and event["specversion"] == "1.0"
    for versions in per_entity_versions(events).values():
        assert versions == sorted(versions)


def _relay_env(settings, topic: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "SKILLBASE_WORKFLOW_DATABASE_HOST": settings.database_host,
        "SKILLBASE_WORKFLOW_DATABASE_PORT": str(settings.database_port),
        "SKILLBASE_WORKFLOW_DATABASE_NAME": settings.database_name,
        "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": settings.database_schema,
        "SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SKILLBASE_WORKFLOW_KAFKA_OUTPUT_TOPIC": topic,
        "SKILLBASE_WORKFLOW_KAFKA_ENABLE_IDEMPOTENCE": "false",
    }


def test_a_relay_killed_mid_stream_loses_nothing_and_duplicates_only_its_unacknowledged_batch(
    app, settings, kafka_broker
):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    batch = 100
    stored = store_events(app, range(1, 151))  # 600 events
    command = [sys.executable, "-m", "interface.cli", "relay", "run", "--batch-size", str(batch)]
    process = subprocess.Popen(command, cwd=ROOT, env=_relay_env(settings, topic))
    try:
        deadline = time.monotonic() + 30
        while relay_position(app, topic) < stored // 3:
            assert process.poll() is None and time.monotonic() < deadline, "the relay did not get going"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    killed_at = relay_position(app, topic)
    assert 0 < killed_at < stored, "killed mid-stream"

    async def restart():
        stop = asyncio.Event()
        task = asyncio.create_task(Relay(app, settings, FAST_RELAY).run(stop))
        await until(lambda: relay_lag(app, topic) == 0, timeout=30)
        stop.set()
        await task
        return await read_topic(settings, topic, lambda r: len({x.value for x in r}) >= stored)

    events = cloudevents(asyncio.run(restart()))

    assert set(stored_ids(app)) == {e["id"] for e in events}
    counts = Counter(e["id"] for e in events)
    duplicates = [e for e in events if counts[e["id"]] > 1]
    for event in duplicates:  # same id, same body, and only from the batch in flight
        assert killed_at < event["sequence"] <= killed_at + batch
    assert max(counts.values()) <= 2
    print(f"killed at {killed_at} of {stored}; {len(duplicates)} duplicate records")
    for versions in per_entity_versions(events).values():
        assert versions == sorted(versions)


def test_with_the_broker_down_commands_work_the_lag_shows_and_everything_arrives_in_order_later(
    app, settings, kafka_broker
):
    import time

    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    store_events(app, range(1, 3))

    async def scenario():
        stop = asyncio.Event()
        relay = Relay(app, settings, FAST_RELAY)
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: relay_lag(app, topic) == 0)
        up_to = relay_position(app, topic)
        await asyncio.to_thread(kafka_broker.stop)
        try:
            began = time.monotonic()
            during = await asyncio.to_thread(store_events, app, range(3, 13))
            command_seconds = time.monotonic() - began
            await until(lambda: relay.stats.failures >= 1, timeout=15)  # it noticed, backs off
            lag_while_down = relay_lag(app, topic)
            failures = relay.stats.failures
        finally:
            await asyncio.to_thread(kafka_broker.start)
        after = await asyncio.to_thread(store_events, app, range(13, 15))
        await until(lambda: relay_lag(app, topic) == 0, timeout=40)
        stop.set()
        await task
        # In-memory broker: what it held before the restart is gone; read what it has now.
        records = await read_topic(settings, topic, lambda r: len({x.value for x in r}) >= during + after)
        return up_to, during, after, command_seconds, lag_while_down, failures, records

    up_to, during, after, command_seconds, lag_while_down, failures, records = asyncio.run(scenario())

    assert command_seconds < 10, "commands did not wait for the broker"
    assert lag_while_down == during and failures >= 1
    expected = {event_id(n.originator_id, n.originator_version)
                for n in app.recorder.select_notifications(start=up_to + 1, limit=100_000)}
    events = cloudevents(records)
    assert {e["id"] for e in events} == expected and len(expected) == during + after
    for subject, versions in per_entity_versions(events).items():
        assert versions == sorted(versions), subject


def test_one_relay_of_several_publishes_and_another_takes_over_when_it_stops(app, settings, kafka_broker):
    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    first_part = store_events(app, range(1, 4))

    async def scenario():
        stops = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
        relays = [Relay(app, settings, FAST_RELAY) for _ in stops]
        tasks = [asyncio.create_task(r.run(s)) for r, s in zip(relays, stops, strict=True)]
        await until(lambda: relay_lag(app, topic) == 0)
        await asyncio.sleep(0.5)
        leaders = [r for r in relays if r.stats.leader]
        publishing = [r for r in relays if r.stats.published]
        index = relays.index(leaders[0])
        stops[index].set()
        await tasks[index]
        second_part = await asyncio.to_thread(store_events, app, range(4, 6))
        await until(lambda: relay_lag(app, topic) == 0)
        successors = [r for r in relays if r.stats.leader]
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
        records = await read_topic(settings, topic, lambda r: len(r) >= first_part + second_part)
        return leaders, publishing, relays[index], successors, records, second_part

    leaders, publishing, first, successors, records, second_part = asyncio.run(scenario())

    assert len(leaders) == 1 and publishing == leaders
    assert len(successors) == 1 and successors[0] is not first and successors[0].stats.published == second_part
    events = cloudevents(records)
    assert sorted(e["id"] for e in events) == sorted(stored_ids(app))  # none lost, none twice


class _Crash(BaseException):
    """The process dies: nothing after this point runs."""


class _CrashesAfterTheBrokerAcks(Relay):
    """Dies between the broker's ack of its second batch and storing the position."""

    def save_position(self, notification_id: int) -> int:
        if self.stats.batches == 1:
            raise _Crash
        return super().save_position(notification_id)


def test_a_crash_between_the_ack_and_the_position_resends_exactly_that_batch_under_the_same_ids(
    app, settings, kafka_broker
):
    topic = kafka_broker.new_topic("workflow")
    settings = kafka_settings(settings, kafka_broker, kafka_output_topic=topic)
    stored = store_events(app, range(1, 31))  # 120 events, batches of 50
    batch = FAST_RELAY.batch_size

    async def scenario():
        with pytest.raises(_Crash):
            await _CrashesAfterTheBrokerAcks(app, settings, FAST_RELAY).run(asyncio.Event())
        crashed_at = relay_position(app, topic)
        stop = asyncio.Event()
        task = asyncio.create_task(Relay(app, settings, FAST_RELAY).run(stop))
        await until(lambda: relay_lag(app, topic) == 0)
        stop.set()
        await task
        return crashed_at, await read_topic(settings, topic, lambda r: len(r) >= stored + batch)

    crashed_at, records = asyncio.run(scenario())

    events = cloudevents(records)
    assert crashed_at == batch
    assert {e["id"] for e in events} == set(stored_ids(app))
    counts = Counter(e["id"] for e in events)
    resent = sorted(e["sequence"] for e in events if counts[e["id"]] == 2)
    assert resent == sorted(2 * list(range(batch + 1, 2 * batch + 1)))
    bodies = defaultdict(set)
    for record in records:
        bodies[dict(record.headers)["ce_id"]].add(record.value)
    assert all(len(values) == 1 for values in bodies.values()), "a duplicate is byte for byte the same"
