"""The msgspec transcoder reads whatever eventsourcing's JSON transcoder wrote into the very
same objects, including what msgspec alone refuses (NaN, infinities), and refuses what the
library refuses (an unregistered type name)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from application.transcoder import MsgspecJSONTranscoder


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = _registered(JSONTranscoder())
FAST = _registered(MsgspecJSONTranscoder())

_keys = st.text(max_size=8) | st.sampled_from(["_type_", "_data_", "id"])
_leaves = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**64, max_value=2**80)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.uuids()
    | st.datetimes(timezones=st.just(timezone.utc)) | st.decimals(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    _leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4), max_leaves=30
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_decodes_what_the_library_wrote_into_the_same_objects(value: Any) -> None:
    data = LIBRARY.encode(value)
    try:
        expected = LIBRARY.decode(data)
    except TypeError:  # data shaped like {"_type_": "?", "_data_": ...}: refused by both
        with pytest.raises(TypeError):
            FAST.decode(data)
    else:
        assert FAST.decode(data) == expected


def test_a_stored_event_shape() -> None:
    event = {
        "timestamp": datetime_now_with_tzinfo(),
        "originator_id": UUID("12345678-1234-5678-1234-567812345678"),
        "engine_state": {"tasks": {"a": {"children": ["b"], "data": {"score": 85}}}},
        "evidence": [{"id": UUID(int=1), "at": datetime(2026, 1, 2, tzinfo=timezone.utc)}],
        "amount": Decimal("1.50"),
    }
    decoded = FAST.decode(LIBRARY.encode(event))
    assert decoded == event
    assert type(decoded["originator_id"]) is UUID and type(decoded["evidence"][0]["at"]) is datetime


def test_what_msgspec_refuses_falls_back_to_the_library() -> None:
    data = LIBRARY.encode({"score": math.inf, "ratio": -math.inf, "id": UUID(int=7)})
    assert FAST.decode(data) == {"score": math.inf, "ratio": -math.inf, "id": UUID(int=7)}
    assert math.isnan(FAST.decode(LIBRARY.encode([math.nan]))[0])


def test_a_transcoded_value_inside_a_transcoded_value_is_revived_first() -> None:
    nested = b'{"_type_":"decimal_str","_data_":"2.5"}'
    assert FAST.decode(b'[' + nested + b']') == LIBRARY.decode(b'[' + nested + b']') == [Decimal("2.5")]


@pytest.mark.parametrize("data", [b'{"_type_":"pickle","_data_":"x"}', b'{"_type_":["x"],"_data_":1}'])
def test_an_unregistered_type_name_is_refused_like_the_library_does(data: bytes) -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.decode(data)


def test_not_json_is_an_error() -> None:
    with pytest.raises(ValueError):
        FAST.decode(b"{not json")
