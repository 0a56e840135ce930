"""The six catalog events: typed data from both modes, and poison that goes to dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interface.kafka.catalog_events import (
    CATALOG_EVENT_TYPES,
    CredentialCreated,
    CredentialDeleted,
    CredentialUpdated,
    SkillCreated,
    SkillDeleted,
    SkillUpdated,
    WorkflowRef,
    decode_catalog_event,
)
from interface.kafka.cloudevents import UndecodableMessage
from interface.kafka.dead_letter import dead_letter_record

EXAMPLES = (
    Path(__file__).resolve().parents[2] / "interface" / "examples" / "catalog-events"
)
SKILL = UUID("4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90")
CREDENTIAL = UUID("9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e")

EXPECTED = {
    "skill-created": SkillCreated(
        id=SKILL,
        version=1,
        name="MIG welding",
        description="Join mild steel with a MIG welder to a structural standard.",
        status="active",
    ),
    "skill-updated": SkillUpdated(
        id=SKILL,
        version=2,
        name="MIG welding (structural)",
        description="Join mild steel with a MIG welder to a structural standard.",
        status="active",
    ),
    "skill-deleted": SkillDeleted(id=SKILL, version=3),
    "credential-created": CredentialCreated(
        id=CREDENTIAL,
        version=1,
        skill_id=SKILL,
        name="MIG welding, level 2",
        description="Assessed by a qualified assessor from photo evidence and a practical demonstration.",
        workflow=WorkflowRef(template="credential-assessment"),
    ),
    "credential-updated": CredentialUpdated(
        id=CREDENTIAL,
        version=2,
        skill_id=SKILL,
        name="MIG welding, level 2",
        description="Assessed from photo evidence, a practical demonstration and a short interview.",
    ),
    "credential-deleted": CredentialDeleted(id=CREDENTIAL, version=3, skill_id=SKILL),
}


def example(stem: str) -> bytes:
    return (EXAMPLES / f"{stem}.json").read_bytes()


def as_binary(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    document = json.loads(raw)
    headers = [
        (f"ce_{name}", document[name].encode())
        for name in ("specversion", "type", "source", "id", "time", "subject")
    ]
    return [*headers, ("content-type", b"application/json")], json.dumps(
        document["data"]
    ).encode()


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_each_example_decodes_to_its_typed_event_in_both_modes(stem):
    structured = decode_catalog_event([], example(stem))
    binary = decode_catalog_event(*as_binary(example(stem)))
    assert structured.data == EXPECTED[stem] == binary.data
    assert structured.type == json.loads(example(stem))["type"] == binary.type
    assert structured.event_id == binary.event_id


def test_there_are_six_catalog_types():
    assert len(set(CATALOG_EVENT_TYPES)) == 6


def test_unknown_fields_are_ignored_and_new_ones_default():
    document = json.loads(example("credential-created"))
    document["data"]["colour"] = "blue"
    del document["data"]["description"], document["data"]["workflow"]
    event = decode_catalog_event([], json.dumps(document).encode())
    assert event.data.description == "" and event.data.workflow is None


def poison(change) -> bytes:
    document = json.loads(example("credential-created"))
    change(document)
    return json.dumps(document).encode()


def set_data(field, value):
    return lambda document: document["data"].__setitem__(field, value)


POISON = [
    (b"{not json", "bad JSON: JSON is malformed: object keys must be strings (byte 1)"),
    (
        poison(lambda d: d.__setitem__("type", "SKILLBASE_CATALOG_BADGE_CREATED")),
        "unknown type `SKILLBASE_CATALOG_BADGE_CREATED`",
    ),
    (poison(lambda d: d.pop("id")), "Object missing required field `id`"),
    (
        poison(lambda d: d.pop("data")),
        "missing data for `SKILLBASE_CATALOG_CREDENTIAL_CREATED`",
    ),
    (
        poison(lambda d: d.__setitem__("data", None)),
        "invalid data: Expected `object`, got `null` - at `$.data`",
    ),
    (
        poison(lambda d: d.__setitem__("datacontenttype", "application/xml")),
        "unsupported datacontenttype `application/xml`",
    ),
    (
        poison(set_data("version", "1")),
        "invalid data: Expected `int`, got `str` - at `$.data.version`",
    ),
    (
        poison(set_data("version", 0)),
        "invalid data: Expected `int` >= 1 - at `$.data.version`",
    ),
    (
        poison(set_data("version", 1.5)),
        "invalid data: Expected `int`, got `float` - at `$.data.version`",
    ),
    (
        poison(set_data("version", 2**64)),
        "invalid data: Expected `int` <= 9223372036854775807 - at `$.data.version`",
    ),
    (
        poison(set_data("id", "not-a-uuid")),
        "invalid data: Invalid UUID - at `$.data.id`",
    ),
    (
        poison(set_data("skill_id", None)),
        "invalid data: Expected `uuid`, got `null` - at `$.data.skill_id`",
    ),
    (
        poison(lambda d: d["data"].pop("name")),
        "invalid data: Object missing required field `name` - at `$.data`",
    ),
    (
        poison(set_data("name", "")),
        "invalid data: Expected `str` of length >= 1 - at `$.data.name`",
    ),
    (
        poison(set_data("workflow", {"template": 3})),
        "invalid data: Expected `str`, got `int` - at `$.data.workflow.template`",
    ),
]


@pytest.mark.parametrize("value,reason", POISON, ids=range(len(POISON)))
def test_poison_catalog_messages_say_precisely_why(value, reason):
    with pytest.raises(UndecodableMessage) as caught:
        decode_catalog_event([], value)
    assert reason in caught.value.reason


def test_bad_json_in_binary_data_is_undecodable():
    headers, _ = as_binary(example("skill-created"))
    with pytest.raises(UndecodableMessage) as caught:
        decode_catalog_event(headers, b'{"id": ')
    assert caught.value.reason == "bad JSON in data: Input data was truncated"


def test_a_poison_message_becomes_a_dead_letter_with_its_reason():
    original_headers = [("ce_id", b"1"), ("dlq_reason", b"an older failure")]
    with pytest.raises(UndecodableMessage) as caught:
        decode_catalog_event(original_headers, b"{not json")
    at = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    value, headers = dead_letter_record(
        "skillbase.catalog",
        1,
        42,
        b"key",
        b"{not json",
        original_headers,
        caught.value.reason,
        at=at,
    )
    assert value == b"{not json"
    assert headers == [
        ("ce_id", b"1"),
        ("dlq_reason", caught.value.reason.encode()),
        ("dlq_topic", b"skillbase.catalog"),
        ("dlq_partition", b"1"),
        ("dlq_offset", b"42"),
        ("dlq_at", b"2026-11-25T08:00:00Z"),
    ]


def test_a_dead_letter_reason_is_bounded_and_stays_utf8():
    _, headers = dead_letter_record("t", 0, 0, None, None, [], "é" * 5000)
    reason = dict(headers)["dlq_reason"]
    assert len(reason) <= 4096 and reason.decode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.binary(max_size=300), st.sampled_from([example("skill-created")])
    )
)
def test_arbitrary_bytes_raise_nothing_but_undecodable_message(value):
    try:
        decode_catalog_event([], value)
    except UndecodableMessage as error:
        assert error.reason
