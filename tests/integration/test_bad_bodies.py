"""Bodies the JSON decoder cannot take are a 400 problem, never a 500 (issues 4 and 8)."""

from __future__ import annotations

from typing import Any

import pytest

from interface.examples import load_example_catalog
from interface.http.testing import api_client, auth

pytestmark = pytest.mark.integration


@pytest.fixture
def client(app: Any, settings: Any, schema_database: Any) -> Any:
    load_example_catalog(app)
    with api_client(settings, app, schema_database) as client:
        yield client


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,                     # deeper than the decoder recurses
    b'{"credential_id": "\xff\xfe"}',                    # not UTF-8
    b'{"credential_id": ' + b"[" * 3000 + b"]" * 3000 + b"}",
])
def test_an_undecodable_body_is_a_400_problem(client: Any, settings: Any, body: bytes) -> None:
    response = client.post("/instances", content=body, headers={
        **auth(settings, "learner-lin"), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 400


def test_a_bad_query_parameter_names_where_it_came_from(client: Any, settings: Any) -> None:
    response = client.get("/instances?limit=-1", headers=auth(settings, "learner-lin"))
    assert response.status_code in (400, 422), response.text
    assert any(error["path"].startswith("query:") for error in response.json()["errors"])


def test_a_body_in_another_type_is_a_415_but_an_empty_post_is_not_judged_by_its_label(
    client: Any, settings: Any
) -> None:
    learner = auth(settings, "learner-lin")
    refused = client.post("/instances", content=b"credential_id=x",
                          headers={**learner, "Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 415, refused.text
    assert refused.json()["detail"].startswith("send the body as application/json")
    started = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                          headers=learner).json()
    task = started["open_task_ids"][0]
    # aiohttp labels a POST without a body application/octet-stream; there is nothing to judge
    claimed = client.post(f"/tasks/{task}/claim", content=b"",
                            headers={**learner, "Content-Type": "application/octet-stream"})
    assert claimed.status_code != 415, claimed.text
    assert claimed.status_code == 200, claimed.text


def test_a_nul_character_in_a_stored_text_field_is_a_422_at_its_path(client: Any, settings: Any, app: Any) -> None:
    """PostgreSQL text cannot hold NUL: accepted, it would stop the read models that store the
    field (an assignee, a reason) at that event."""
    learner = auth(settings, "learner-lin")
    started = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                          headers=learner).json()
    reassigned = client.post(f"/tasks/{started['open_task_ids'][0]}/reassign", json={"assignee": "bo\u0000"},
                             headers=auth(settings, "admin-al", ["admin"]))
    cancelled = client.post(f"/instances/{started['id']}/cancel", json={"reason": "oops\u0000"}, headers=learner)
    unknown = client.post("/instances", json={"credential_id": "cred\u0000"}, headers=learner)
    for refused, path in ((reassigned, "$.assignee"), (cancelled, "$.reason"), (unknown, "$.credential_id")):
        assert refused.status_code in (400, 422), refused.text
        assert [error["path"] for error in refused.json()["errors"]] == [path]
        assert "without a NUL character" in refused.json()["errors"][0]["message"]
    assert client.get(f"/instances/{started['id']}", headers=learner).json()["status"] == "running"


def test_a_token_whose_subject_holds_a_nul_is_refused(client: Any, settings: Any) -> None:
    response = client.get("/instances", headers=auth(settings, "lin\u0000"))
    assert response.status_code == 401


def test_an_unknown_body_field_is_named_at_its_own_path(client: Any, settings: Any) -> None:
    response = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e",
                                               "colour": "red"}, headers=auth(settings, "learner-lin"))
    assert response.status_code == 422, response.text
    assert [error["path"] for error in response.json()["errors"]] == ["$.colour"]


def test_a_key_with_a_trailing_newline_is_refused_and_a_weak_if_match_never_matches(
    client: Any, settings: Any
) -> None:
    from interface.http.commands import KEY_PATTERN, check_if_match
    from interface.http.problems import PreconditionFailed

    assert KEY_PATTERN.match("key") and not KEY_PATTERN.match("key\n")
    assert check_if_match('"3"', 3)
    with pytest.raises(PreconditionFailed):
        check_if_match('W/"3"', 3)


def test_an_id_in_capitals_replays_the_same_keyed_command(client: Any, settings: Any) -> None:
    learner = auth(settings, "learner-lin")
    started = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                          headers=learner).json()["id"]
    keyed = {**learner, "Idempotency-Key": "cancel-once"}
    first = client.post(f"/instances/{started}/cancel", json={"reason": "wrong one"}, headers=keyed)
    again = client.post(f"/instances/{started.upper()}/cancel", json={"reason": "wrong one"}, headers=keyed)
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"


def test_a_missing_body_field_is_reported_at_its_own_path(app: Any, settings: Any, schema_database: Any) -> None:
    from interface.examples import load_example_catalog
    from interface.http.testing import LEARNER, api_client, auth

    load_example_catalog(app)
    learner = auth(settings, *LEARNER)
    with api_client(settings, app, schema_database) as client:
        instance = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                               headers=learner).json()["id"]
        missing_reason = client.post(f"/instances/{instance}/cancel", json={}, headers=learner)
        missing_credential = client.post("/instances", json={}, headers=learner)
    assert [(r.status_code, [e["path"] for e in r.json()["errors"]]) for r in (missing_reason, missing_credential)] == [
        (422, ["$.reason"]), (422, ["$.credential_id"])]
