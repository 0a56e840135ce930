"""The relay's and consumer's pure parts: one stored event -> one Kafka record, delays,
lock keys, and which catalog command each catalog event means (no I/O)."""

from __future__ import annotations

import json

from eventsourcing.persistence import Tracking

from application.contract import event_id
from domain.deployment import ACTIVE, WorkflowDeployment
from interface.kafka.catalog_apply import apply_catalog_event
from interface.kafka.catalog_events import decode_catalog_event
from interface.kafka.consumer import tracking_name
from interface.kafka.leadership import lock_key
from interface.kafka.relay import Backoff, outbound_record, relay_name


def deployment_events():
    deployment = WorkflowDeployment(skill_id="s-1", name="MIG", description="", status=ACTIVE, catalog_version=1)
    deployment.update_from_catalog(name="MIG 2", description="", status=ACTIVE, catalog_version=2)
    return deployment, deployment.collect_events()


def test_a_stored_event_becomes_one_record_keyed_by_its_entity_with_routing_headers():
    deployment, (_created, updated) = deployment_events()

    record = outbound_record(7, updated, deployment)

    event = json.loads(record.value)
    assert record.notification_id == 7 and event["sequence"] == 7
    assert record.key == str(deployment.id).encode()
    assert dict(record.headers) == {
        "content-type": b"application/cloudevents+json",
        "ce_type": b"SKILLBASE_WORKFLOW_DEPLOYMENT_UPDATED",
        "ce_id": event_id(deployment.id, 2).encode(),
        "ce_subject": f"deployment/{deployment.id}".encode(),
    }
    assert event["id"] == event_id(deployment.id, 2) and event["data"]["state"]["name"] == "MIG 2"


def test_the_same_stored_event_always_gives_the_same_record():
    deployment, (_created, updated) = deployment_events()
    assert outbound_record(7, updated, deployment) == outbound_record(7, updated, deployment)


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets():
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in delays[5:])
    backoff.reset()
    assert backoff.next() <= 0.1


def test_names_and_lock_keys_are_stable_and_per_schema_and_topic():
    assert relay_name("skillbase.workflow") == "relay:skillbase.workflow"
    assert tracking_name("skillbase.catalog", 2) == "kafka:skillbase.catalog:2"
    key = lock_key("public", "relay", "skillbase.workflow")
    assert key == lock_key("public", "relay", "skillbase.workflow")
    assert key != lock_key("other", "relay", "skillbase.workflow") != lock_key("public", "relay", "t2")
    assert -(2**63) <= key < 2**63


class RecordingApp:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def command(**kwargs):
            self.calls.append((name, kwargs))
            return True
        return command


def catalog(type_: str, **data) -> bytes:
    return json.dumps({"specversion": "1.0", "type": type_, "source": "/skillbase/catalog", "id": "e-1",
                       "data": data}).encode()


SKILL, CREDENTIAL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90", "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"


def test_each_catalog_event_calls_its_catalog_command_with_the_tracking():
    app, tracking = RecordingApp(), Tracking(application_name="kafka:c:0", notification_id=5)
    messages = [
        catalog("SKILLBASE_CATALOG_SKILL_CREATED", id=SKILL, version=1, name="MIG"),
        catalog("SKILLBASE_CATALOG_SKILL_DELETED", id=SKILL, version=3),
        catalog("SKILLBASE_CATALOG_CREDENTIAL_UPDATED", id=CREDENTIAL, version=2, skill_id=SKILL, name="L2",
                workflow={"template": "credential-assessment"}),
        catalog("SKILLBASE_CATALOG_CREDENTIAL_DELETED", id=CREDENTIAL, version=3),
    ]
    for value in messages:
        assert apply_catalog_event(app, decode_catalog_event([], value), tracking) is True

    assert app.calls == [
        ("upsert_skill", {"skill_id": SKILL, "version": 1, "name": "MIG", "description": "", "status": "active",
                          "tracking": tracking}),
        ("delete_skill", {"skill_id": SKILL, "version": 3, "tracking": tracking}),
        ("upsert_credential", {"credential_id": CREDENTIAL, "version": 2, "skill_id": SKILL, "name": "L2",
                               "description": "", "template": "credential-assessment", "tracking": tracking}),
        ("delete_credential", {"credential_id": CREDENTIAL, "version": 3, "skill_id": None, "tracking": tracking}),
    ]


def test_every_retry_loop_uses_the_one_backoff_rule():
    from application import backoff
    from application.mail import retry
    from interface.kafka import retrying
    from projections import runner

    assert retrying.Backoff is runner.Backoff is backoff.Backoff
    assert retry.backoff_delay is backoff.backoff_delay
