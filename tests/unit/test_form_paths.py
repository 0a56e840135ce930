"""Form data problems name the field at fault by its own JSON path."""

from __future__ import annotations

import json

import pytest

from application.forms import validate_form
from domain.errors import InvalidInput

SCHEMA = json.dumps({
    "type": "object",
    "properties": {"score": {"type": "integer"}, "feedback": {"type": "string"}},
    "required": ["score"],
    "additionalProperties": False,
})


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as raised:
        validate_form(SCHEMA, data)
    return [(p.path, p.message) for p in raised.value.problems]


def test_a_field_the_form_does_not_have_is_named_at_its_own_path():
    assert problems({"score": 1, "colour": "red", "size": 2}) == [
        ("$.colour", "this form has no such field"), ("$.size", "this form has no such field")]


def test_a_missing_field_is_named_at_its_path():
    assert [path for path, _ in problems({"feedback": "ok"})] == ["$.score"]


def test_a_field_name_that_is_not_a_name_says_so():
    found = problems({"score": 1, "": 1, "two words": 2, "_private": 3})
    not_a_name = "a field name is a letter or '_' followed by letters, digits or '_'"
    assert ("$.", not_a_name) in found and ("$.two words", not_a_name) in found
    assert ("$._private", "field names may not start with '_'") in found
    assert ("$._private", not_a_name) not in found


def test_an_object_with_the_event_stores_reserved_key_is_refused_wherever_it_is():
    found = problems({"score": 1, "feedback": {"nested": [{"_type_": "uuid_hex", "_data_": "00"}]}})
    assert ("$.feedback.nested[0]._type_", "the key _type_ is reserved by the event store") in found


def test_a_script_cannot_leave_the_reserved_key_in_task_data():
    from application.engine.scripts import storable

    with pytest.raises(ValueError, match="_type_"):
        storable({"x": {"_type_": "nope", "_data_": 1}}, "x")


def test_a_due_in_too_large_for_a_date_means_no_due_date_not_a_crash():
    from datetime import UTC, datetime

    from application.timers.due import REMINDER_LEAD_MAX, reminder_at

    due = datetime(2030, 1, 1, tzinfo=UTC)
    assert reminder_at(due, "P99999999D") == due - REMINDER_LEAD_MAX
