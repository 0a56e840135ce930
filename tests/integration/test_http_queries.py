"""The lists, served from the read models the projections keep: inboxes, my instances,
definitions, deployments, dashboards; cursor pages; read-your-writes with wait_for."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from interface.examples import load_example_catalog
from interface.http.testing import (
    ADMIN,
    ASSESSOR,
    LEARNER,
    OTHER_LEARNER,
    OUTSIDER,
    api_client,
    auth,
)
from tests.integration.test_http_process import attach_evidence, only_open_task

pytestmark = pytest.mark.integration
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
SKILL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90"


@pytest.fixture
def client(app: Any, settings: Any, schema_database: Any) -> Iterator[Any]:
    load_example_catalog(app)
    with api_client(settings, app, schema_database, run_projections=True) as client:
        yield client


def submitted(client: Any, app: Any, settings: Any) -> tuple[str, str, int]:
    """An instance whose evidence is in: (instance id, assess task id, log position)."""
    learner = auth(settings, *LEARNER)
    instance = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
    submit = only_open_task(client, learner, instance)
    file_id = attach_evidence(app, settings, instance)
    done = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.", "evidence_files": [file_id]}})
    return instance, only_open_task(client, learner, instance), int(done.headers["workflow-log-position"])


def test_inboxes_show_each_user_their_tasks(client: Any, app: Any, settings: Any) -> None:
    instance, assess, position = submitted(client, app, settings)
    wait = {"wait_for": position}
    groups = client.get("/tasks", params={"inbox": "groups", **wait}, headers=auth(settings, *ASSESSOR)).json()
    assert [t["id"] for t in groups["items"]] == [assess]
    outsider = client.get("/tasks", params={"inbox": "groups", **wait}, headers=auth(settings, *OUTSIDER)).json()
    assert outsider["items"] == []
    claimed = client.post(f"/tasks/{assess}/claim", headers=auth(settings, *ASSESSOR))
    wait = {"wait_for": claimed.headers["workflow-log-position"]}
    mine = client.get("/tasks", params=wait, headers=auth(settings, *ASSESSOR)).json()
    assert [t["id"] for t in mine["items"]] == [assess]
    unclaimed = client.get("/tasks", params={"inbox": "groups", "unassigned": True, **wait},
                           headers=auth(settings, *ASSESSOR)).json()
    assert unclaimed["items"] == []
    by_instance = client.get("/tasks", params={"inbox": "all", "instance_id": instance, "status": "completed", **wait},
                             headers=auth(settings, *ADMIN)).json()
    assert [t["element_id"] for t in by_instance["items"]] == ["submit_evidence"]
    assert client.get("/tasks", params={"inbox": "all"}, headers=auth(settings, *LEARNER)).status_code == 403


def test_learners_list_only_their_own_instances_page_by_page(client: Any, app: Any, settings: Any) -> None:
    learner = auth(settings, *LEARNER)
    started = [client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner) for _ in range(3)]
    wait = {"wait_for": max(int(r.headers["workflow-log-position"]) for r in started)}
    first = client.get("/instances", params={"limit": 2, **wait}, headers=learner).json()
    second = client.get("/instances", params={"limit": 2, "cursor": first["next_cursor"]}, headers=learner).json()
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and second["next_cursor"] is None
    assert {i["id"] for i in first["items"] + second["items"]} == {r.json()["id"] for r in started}
    other = client.get("/instances", params=wait, headers=auth(settings, *OTHER_LEARNER)).json()
    assert other["items"] == []
    assert client.get("/instances", params={"user_id": LEARNER[0]},
                      headers=auth(settings, *OTHER_LEARNER)).status_code == 403
    everyone = client.get("/instances", params=wait, headers=auth(settings, *ADMIN)).json()
    assert len(everyone["items"]) == 3
    bad = client.get("/instances", params={"cursor": "nonsense"}, headers=learner)
    assert bad.status_code == 422


def test_admins_list_definitions_deployments_and_dashboards(client: Any, app: Any, settings: Any) -> None:
    _, _, position = submitted(client, app, settings)
    admin, wait = auth(settings, *ADMIN), {"wait_for": position}
    definitions = client.get("/definitions", params=wait, headers=admin).json()
    assert [d["credential_id"] for d in definitions["items"]] == [CREDENTIAL]
    deployments = client.get("/deployments", params=wait, headers=admin).json()
    assert deployments["items"][0]["pins"][0]["credential_id"] == CREDENTIAL
    board = client.get("/dashboard", params={"credential_id": CREDENTIAL, **wait}, headers=admin).json()
    assert board["instances_by_status"].get("running") == 1 and board["open_tasks_by_group"] == {"assessor": 1}
    assert client.get("/dashboard", headers=admin).status_code == 422
    assert client.get("/definitions", headers=auth(settings, *LEARNER)).status_code == 403


def _crafted(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


@pytest.mark.parametrize("values", [("garbage", "x"), ({"a": 1}, [1]), (None, None),
                                    ("\ud800", "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e")], ids=repr)
def test_a_crafted_cursor_is_a_422_on_every_list(client: Any, settings: Any, values: tuple[Any, Any]) -> None:
    admin = auth(settings, *ADMIN)
    lists = [("/tasks", {}, "inbox"), ("/tasks", {"inbox": "all"}, "tasks"), ("/instances", {}, "instances"),
             ("/definitions", {}, "definitions"), ("/deployments", {}, "deployments")]
    for path, params, kind in lists:
        answer = client.get(path, params={**params, "cursor": _crafted(kind, *values)}, headers=admin)
        assert answer.status_code == 422, (path, params, answer.text)
        assert answer.json()["errors"] == [{"path": "cursor", "message": "invalid cursor"}]


def test_a_log_position_not_reached_yet_is_a_422_at_once(client: Any, app: Any, settings: Any) -> None:
    admin, beyond = auth(settings, *ADMIN), app.recorder.max_notification_id() + 1000
    lists = [("/tasks", {}), ("/tasks", {"inbox": "all"}), ("/tasks", {"inbox": "groups"}), ("/instances", {}),
             ("/definitions", {}), ("/deployments", {}), ("/dashboard", {"credential_id": CREDENTIAL})]
    for path, params in lists:
        started = time.monotonic()
        answer = client.get(path, params={**params, "wait_for": beyond}, headers=admin)
        assert time.monotonic() - started < 2, path
        assert answer.status_code == 422, (path, answer.text)
        assert [e["path"] for e in answer.json()["errors"]] == ["query:wait_for"]
        assert answer.json()["detail"] == "that log position does not exist yet"
    head = app.recorder.max_notification_id()
    assert client.get("/instances", params={"wait_for": head}, headers=admin).status_code == 200


@pytest.mark.parametrize("path", ["/instances", "/tasks"])
def test_an_unknown_status_is_a_bad_parameter(client: Any, settings: Any, path: str) -> None:
    answer = client.get(path, params={"status": "bogus"}, headers=auth(settings, *ADMIN))
    assert answer.status_code == 400, answer.text
    assert [e["path"] for e in answer.json()["errors"]] == ["query:status"]


@pytest.mark.parametrize(("path", "status"), [("/instances", "running"), ("/instances", "failed"),
                                               ("/tasks", "completed"), ("/tasks", "cancelled")])
def test_a_known_status_is_accepted(client: Any, settings: Any, path: str, status: str) -> None:
    params = {"status": status, **({"inbox": "all"} if path == "/tasks" else {})}
    assert client.get(path, params=params, headers=auth(settings, *ADMIN)).status_code == 200


@pytest.mark.parametrize(("entity", "resource", "catalog_id"), [("definition", "definitions", CREDENTIAL),
                                                                ("deployment", "deployments", SKILL)])
def test_the_audit_trail_takes_the_aggregate_id_or_the_catalog_id(
    client: Any, settings: Any, entity: str, resource: str, catalog_id: str,
) -> None:
    admin = auth(settings, *ADMIN)
    aggregate_id = client.get(f"/{resource}/{catalog_id}", headers=admin).json()["id"]
    assert aggregate_id != catalog_id
    by_aggregate = client.get(f"/audit/{entity}/{aggregate_id}", headers=admin)
    by_catalog = client.get(f"/audit/{entity}/{catalog_id}", headers=admin)
    assert by_aggregate.status_code == by_catalog.status_code == 200, by_catalog.text
    assert by_catalog.json() == by_aggregate.json() and by_catalog.json()["id"] == aggregate_id
    other = "instance" if entity == "definition" else "task"
    assert client.get(f"/audit/{other}/{catalog_id}", headers=admin).status_code == 404
    assert client.get(f"/audit/{entity}/00000000-0000-4000-8000-000000000000", headers=admin).status_code == 404
    # with a cursor too: past the end of a known entity is an empty page, an unknown one is not found
    for named in (aggregate_id, catalog_id):
        past = client.get(f"/audit/{entity}/{named}", params={"cursor": "999"}, headers=admin)
        assert past.status_code == 200 and past.json()["items"] == [] and past.json()["id"] == aggregate_id
    for unknown in ("00000000-0000-4000-8000-000000000000", aggregate_id):
        wrong = other if unknown == aggregate_id else entity
        answer = client.get(f"/audit/{wrong}/{unknown}", params={"cursor": "1"}, headers=admin)
        assert answer.status_code == 404, answer.text


@pytest.mark.parametrize(("path", "parameter"), [
    ("/dashboard", "credential_id"), ("/dashboard", "skill_id"), ("/tasks", "credential_id"),
    ("/tasks", "skill_id"), ("/instances", "credential_id"), ("/instances", "user_id"),
    ("/definitions", "unknown"),
])
def test_a_nul_character_in_a_query_parameter_is_a_422_naming_it(client: Any, settings: Any, path: str,
                                                                   parameter: str) -> None:
    """PostgreSQL text cannot hold NUL: found by schemathesis as a 500 on /dashboard."""
    answer = client.get(path, params={parameter: "a\x00b"}, headers=auth(settings, *ADMIN))
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [{"path": f"query:{parameter}", "message": "NUL (\\u0000) is not allowed"}]


def test_a_nul_character_reaches_no_route_not_even_the_upload(client: Any, settings: Any) -> None:
    learner = auth(settings, *LEARNER)
    instance = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
    answer = client.post(f"/instances/{instance}/files", params={"x\x00": "1"}, content=b"notes",
                         headers={**learner, "Content-Type": "text/plain"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["path"] == "query:x"
    stored = client.post(f"/instances/{instance}/files", content=b"notes",
                         headers={**learner, "Content-Type": "text/plain"})
    assert stored.status_code == 201, stored.text  # any media type still reaches the upload


def test_a_due_before_without_a_zone_is_read_as_utc(client: Any, app: Any, settings: Any, schema_database: Any) -> None:
    import psycopg

    admin = auth(settings, *ADMIN)
    _instance, assess, position = submitted(client, app, settings)
    client.get("/tasks", params={"inbox": "all", "wait_for": position}, headers=admin)
    with psycopg.connect(schema_database.conninfo(), autocommit=True) as connection:
        connection.execute(f'UPDATE "{schema_database.schema}".rm_tasks SET due_at = now() + interval \'1 day\' WHERE id = %s',
                           (assess,))
    naive = client.get("/tasks", params={"inbox": "all", "due_before": "2099-01-01T00:00:00"}, headers=admin)
    zoned = client.get("/tasks", params={"inbox": "all", "due_before": "2099-01-01T00:00:00Z"}, headers=admin)
    assert naive.status_code == 200, naive.text
    assert [t["id"] for t in naive.json()["items"]] == [t["id"] for t in zoned.json()["items"]]
    assert assess in [t["id"] for t in naive.json()["items"]]
    empty_id = client.get("/dashboard", params={"credential_id": ""}, headers=admin)
    assert empty_id.status_code != 500 and empty_id.json().get("scope_id") != "None"


# -- found in review (2026-11-27) ------------------------------------------------------------


@pytest.mark.parametrize("due_before", ["253402300800", "0", "1.5", "2026-12-01", "garbage"])
@pytest.mark.parametrize("inbox", ["mine", "groups", "all"])
def test_due_before_is_a_date_time_never_a_number(client: Any, settings: Any, inbox: str, due_before: str) -> None:
    """A number was taken for a Unix time, and one past the year 9999 was a 500."""
    answer = client.get("/tasks", params={"inbox": inbox, "due_before": due_before}, headers=auth(settings, *ADMIN))
    assert answer.status_code == 400, answer.text
    assert [e["path"] for e in answer.json()["errors"]] == ["query:due_before"]


def test_due_before_with_and_without_an_offset_is_accepted(client: Any, settings: Any) -> None:
    for due_before in ("2026-12-01T09:00:00Z", "2026-12-01T09:00:00+01:00", "2026-12-01T09:00:00"):
        answer = client.get("/tasks", params={"inbox": "all", "due_before": due_before}, headers=auth(settings, *ADMIN))
        assert answer.status_code == 200, (due_before, answer.text)


def test_a_deeply_nested_cursor_is_an_invalid_cursor(client: Any, settings: Any) -> None:
    deep = base64.urlsafe_b64encode(b"[" * 3_000 + b"]" * 3_000).decode().rstrip("=")
    answer = client.get("/instances", params={"cursor": deep}, headers=auth(settings, *ADMIN))
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [{"path": "cursor", "message": "invalid cursor"}]


def test_a_group_inbox_of_another_status_names_the_query_parameter(client: Any, settings: Any) -> None:
    answer = client.get("/tasks", params={"inbox": "groups", "status": "completed"}, headers=auth(settings, *ASSESSOR))
    assert answer.status_code == 422, answer.text
    assert [e["path"] for e in answer.json()["errors"]] == ["query:status"]
