"""What the outbox keeps of an email payload: the fields the mail worker uses, as storable text."""

from __future__ import annotations

import json
import math

import pytest

from application.mail.compose import payload_problem, recipients, storable_payload


def stored(payload):
    """The payload as the outbox writes it into its jsonb column (no NaN, no NUL)."""
    text = json.dumps(storable_payload(payload), allow_nan=False)
    assert "\\u0000" not in text
    return json.loads(text)


def test_only_the_fields_the_mail_worker_uses_are_kept():
    payload = {"template": "credential_passed", "to": "learner", "note": "hello\x00world",
               "score": math.nan, "limit": math.inf, "nested": {"x": -math.inf}, "lone": "\ud800"}
    assert stored(payload) == {"template": "credential_passed", "to": "learner"}
    assert payload_problem(stored(payload)) is None
    assert stored({"template": "t", "to_group": "assessor"}) == {"template": "t", "to_group": "assessor"}


@pytest.mark.parametrize(("payload", "unusable"), [
    ({"template": "credential_passed\x00", "to": "learner"}, ["template"]),
    ({"template": "t", "to": "lin\ud800@example.org"}, ["to"]),
    ({"template": "t", "to_group": math.nan}, ["to_group"]),
    ({"template": ["t"], "to": 7}, ["template", "to"]),
    ("hello\x00world", ["payload"]),
    ([1, math.nan], ["payload"]),
])
def test_a_used_field_that_cannot_be_stored_is_named_and_makes_the_email_an_incident(payload, unusable):
    kept = stored(payload)
    assert kept["unusable"] == unusable
    problem = payload_problem(kept)
    assert problem and "could not be stored" in problem
    assert "hello" not in problem and "lin" not in problem


def test_a_refusal_never_repeats_the_payload():
    from application.mail import MailDeliveryFailed

    with pytest.raises(MailDeliveryFailed) as refused:
        recipients("a learner's secret", learner_email="lin@example.org", group_addresses={}, literal_allowed=False)
    assert "secret" not in refused.value.reason
