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
from tests.integration.kafka_helpers import FAST_RELAY, cloudevents, kafka_settings, read_topic, until

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
