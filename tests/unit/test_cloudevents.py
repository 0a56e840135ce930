"""CloudEvents envelope: structured and binary mode, and precise reasons for poison."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interface.kafka.cloudevents import (
    CloudEvent,
    UndecodableMessage,
    decode_binary,
    decode_message,
    decode_structured,
    encode_structured,
)

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPOSITORY / "interface/examples/catalog-events").glob("*.json"))
assert len(EXAMPLES) == 6, EXAMPLES


def binary_form(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    document = json.loads(raw)
    headers = [
        (f"ce_{name}", document[name].encode())
        for name in ("specversion", "type", "source", "id", "time", "subject")
        if name in document
    ]
    headers.append(("content-type", document["datacontenttype"].encode()))
    return headers, json.dumps(document["data"]).encode()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_decodes_the_same_in_structured_and_binary_mode(path):
    raw = path.read_bytes()
    structured = decode_message([], raw)
    binary = decode_message(*binary_form(raw))

    document = json.loads(raw)
    assert structured.type == document["type"] and structured.id == document["id"]
    assert structured.time is not None and structured.time.tzinfo is not None
    for event in (structured, binary):
        assert msgspec.json.decode(event.data) == document["data"]
    assert msgspec.structs.replace(structured, data=None) == msgspec.structs.replace(
        binary, data=None
    )


def test_content_type_cloudevents_json_means_structured_even_with_ce_headers():
    raw = EXAMPLES[0].read_bytes()
    headers = [
        ("content-type", b"application/cloudevents+json"),
        ("ce_specversion", b"1.0"),
    ]
    assert decode_message(headers, raw) == decode_structured(raw)


def test_encode_structured_round_trips_and_omits_absent_attributes():
    event = CloudEvent(
        type="SKILLBASE_WORKFLOW_TASK_CREATED",
        source="/skillbase/workflow",
        id="c0ffee00-0000-4000-8000-000000000001",
        time=datetime(2026, 11, 20, 9, 15, 2, tzinfo=UTC),
        subject="task/1",
        data={"id": "1", "changed": ["status"]},
    )
    raw = encode_structured(event)
    document = json.loads(raw)
    assert (
        document["specversion"] == "1.0" and document["time"] == "2026-11-20T09:15:02Z"
    )
    assert "datacontenttype" not in document
    back = decode_structured(raw)
    assert msgspec.json.decode(back.data) == event.data
    assert msgspec.structs.replace(back, data=None) == msgspec.structs.replace(
        event, data=None
    )


GOOD = {"specversion": "1.0", "type": "T", "source": "/s", "id": "1"}
POISON_STRUCTURED = [
    (b"", "empty value"),
    (b"{not json", "bad JSON: JSON is malformed: object keys must be strings (byte 1)"),
    (b'{"specversion": "1.0"', "bad JSON: Input data was truncated"),
    (b"\xff\xfe", "bad JSON: JSON is malformed: invalid character (byte 0)"),
    (b"[]", "invalid CloudEvent: Expected `object`, got `array`"),
    (
        b'{"specversion":"1.0","type":"T","source":"/s"}',
        "Object missing required field `id`",
    ),
    (
        json.dumps({**GOOD, "specversion": "0.3"}).encode(),
        "Invalid enum value '0.3' - at `$.specversion`",
    ),
    (
        json.dumps({**GOOD, "id": ""}).encode(),
        "Expected `str` of length >= 1 - at `$.id`",
    ),
    (json.dumps({**GOOD, "id": 7}).encode(), "Expected `str`, got `int` - at `$.id`"),
    (
        json.dumps({**GOOD, "time": "2026-11-20T09:15:02"}).encode(),
        "with a timezone component - at `$.time`",
    ),
    (
        json.dumps({**GOOD, "time": "yesterday"}).encode(),
        "Invalid RFC3339 encoded datetime - at `$.time`",
    ),
]


@pytest.mark.parametrize("value,reason", POISON_STRUCTURED)
def test_poison_structured_messages_say_precisely_why(value, reason):
    with pytest.raises(UndecodableMessage) as caught:
        decode_message([], value)
    assert reason in caught.value.reason


CE = [
    ("ce_specversion", b"1.0"),
    ("ce_type", b"T"),
    ("ce_source", b"/s"),
    ("ce_id", b"1"),
]
POISON_BINARY = [
    (CE[:3], "missing header `ce_id` (binary mode)"),
    ([*CE, ("ce_id", b"2")], "duplicate header `ce_id`"),
    (
        [*CE, ("ce_time", b"noon")],
        "Invalid RFC3339 encoded datetime - at header `ce_time`",
    ),
    (
        [("ce_specversion", b"0.3"), *CE[1:]],
        "Invalid enum value '0.3' - at header `ce_specversion`",
    ),
    ([*CE[:3], ("ce_id", b"\xff")], "header `ce_id` is not UTF-8 (byte 0)"),
    ([*CE[:3], ("ce_id", None)], "header `ce_id` has no value"),
    ([("content-type", b"application/cloudevents-batch+json")], "batched mode"),
    (
        [("content-type", b"application/cloudevents+avro")],
        "unsupported structured content-type",
    ),
]


@pytest.mark.parametrize("headers,reason", POISON_BINARY)
def test_poison_binary_messages_say_precisely_why(headers, reason):
    with pytest.raises(UndecodableMessage) as caught:
        decode_message(headers, b"{}")
    assert reason in caught.value.reason


def test_binary_mode_keeps_non_json_data_as_bytes():
    event = decode_binary([*CE, ("content-type", b"image/png")], b"\x89PNG")
    assert event.data == b"\x89PNG" and event.datacontenttype == "image/png"


headers_strategy = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "ce_specversion",
                "ce_type",
                "ce_id",
                "ce_source",
                "ce_time",
                "content-type",
                "x",
            ]
        ),
        st.one_of(
            st.none(),
            st.binary(max_size=40),
            st.sampled_from([b"1.0", b"application/cloudevents+json"]),
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(headers=headers_strategy, value=st.one_of(st.none(), st.binary(max_size=200)))
def test_arbitrary_bytes_raise_nothing_but_undecodable_message(headers, value):
    try:
        decode_message(headers, value)
    except UndecodableMessage as error:
        assert error.reason
