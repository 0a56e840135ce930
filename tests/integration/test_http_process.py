"""The example credential through HTTP, as its users see it: the learner starts it and
submits evidence, the assessor claims and assesses, marks the observation done; pass and fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from application.bootstrap import open_file_store
from domain.identity import Actor
from interface.examples import load_example_catalog
from interface.http.testing import ASSESSOR, LEARNER, api_client, auth

pytestmark = pytest.mark.integration


@pytest.fixture
def client(app: Any, settings: Any, schema_database: Any) -> Iterator[Any]:
    load_example_catalog(app)
    with api_client(settings, app, schema_database) as client:
        yield client


def attach_evidence(app: Any, settings: Any, instance_id: str) -> str:
    """Until the upload endpoint exists (issue 6), the evidence goes in through the service."""
    stored = open_file_store(settings).write([b"a 6 mm fillet weld, even bead\n"], "text/plain")
    app.attach_file(Actor.of(LEARNER[0]), __import__("uuid").UUID(instance_id), file_id=stored.file_id,
                    extension=stored.extension, media_type=stored.media_type, size=stored.size,
                    sha256=stored.sha256, name="weld.txt")
    return str(stored.file_id)


def only_open_task(client: Any, headers: dict[str, str], instance_id: str) -> str:
    (task_id,) = client.get(f"/instances/{instance_id}", headers=headers).json()["open_task_ids"]
    return task_id


def submit_evidence(client: Any, app: Any, settings: Any, learner: dict[str, str], instance_id: str) -> Any:
    """The learner completes *Submit evidence* with an attached file; the answer."""
    submit = only_open_task(client, learner, instance_id)
    file_id = attach_evidence(app, settings, instance_id)
    return client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.", "evidence_files": [file_id]}})


def to_assessment(client: Any, app: Any, settings: Any, learner: dict[str, str]) -> tuple[str, str]:
    """A new instance of the example credential, its evidence submitted: (instance, assess task)."""
    instance_id = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                              headers=learner).json()["id"]
    submit_evidence(client, app, settings, learner, instance_id)
    return instance_id, only_open_task(client, learner, instance_id)


def run_process(client: Any, app: Any, settings: Any, score: int) -> dict[str, Any]:
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    credential = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
    started = client.post("/instances", json={"credential_id": credential}, headers=learner)
    assert started.status_code == 201, started.text
    instance_id = started.json()["id"]
    assert started.headers["location"] == f"/instances/{instance_id}"
    assert started.headers["etag"] == '"1"'

    submit = only_open_task(client, learner, instance_id)
    task = client.get(f"/tasks/{submit}", headers=learner).json()
    assert task["form"]["title"] == "Submit evidence" and task["documentation"]
    file_id = attach_evidence(app, settings, instance_id)
    done = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.",
        "evidence_files": [file_id]}})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"

    assess = only_open_task(client, learner, instance_id)
    assert client.get(f"/tasks/{assess}", headers=learner).status_code == 200  # the learner's own process
    claimed = client.post(f"/tasks/{assess}/claim", headers=assessor)
    assert claimed.status_code == 200 and claimed.json()["assignee"] == ASSESSOR[0]
    stale = client.post(f"/tasks/{assess}/complete", headers={**assessor, "If-Match": '"1"'},
                        json={"data": {"score": score, "feedback": "x"}})
    assert stale.status_code == 412
    assessed = client.post(f"/tasks/{assess}/complete", headers={**assessor, "If-Match": claimed.headers["etag"]},
                           json={"data": {"score": score, "feedback": "Reviewed against the level 2 standard."}})
    assert assessed.status_code == 200, assessed.text

    instance = client.get(f"/instances/{instance_id}", headers=learner).json()
    if instance["status"] == "running":
        observe = only_open_task(client, learner, instance_id)
        assert client.post(f"/tasks/{observe}/claim", headers=assessor).status_code == 200
        assert client.post(f"/tasks/{observe}/complete", headers=assessor, json={"data": {}}).status_code == 200
        instance = client.get(f"/instances/{instance_id}", headers=learner).json()
    return instance


def test_a_learner_passes_through_the_api(client: Any, app: Any, settings: Any) -> None:
    instance = run_process(client, app, settings, score=85)
    assert (instance["status"], instance["result"]) == ("completed", "pass")
    assert [f["name"] for f in instance["evidence"]] == ["weld.txt"]
    assert [h["fact"] for h in instance["history"]][0] == "Started"
    assert instance["history"][-1]["fact"] == "Completed"


def test_a_learner_fails_through_the_api(client: Any, app: Any, settings: Any) -> None:
    instance = run_process(client, app, settings, score=40)
    assert (instance["status"], instance["result"]) == ("completed", "fail")
    assert instance["evidence"] == []


def test_form_errors_name_each_field(client: Any, settings: Any) -> None:
    learner = auth(settings, *LEARNER)
    instance_id = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                              headers=learner).json()["id"]
    submit = only_open_task(client, learner, instance_id)
    refused = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {"statement": 3}})
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert {e["path"] for e in refused.json()["errors"]} == {"$.statement", "$.evidence_files"}


def test_conflicts_are_409(client: Any, app: Any, settings: Any) -> None:
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    other_assessor = auth(settings, "assessor-bo", ["assessor"])
    instance_id, assess = to_assessment(client, app, settings, learner)
    assert client.post(f"/tasks/{assess}/claim", headers=assessor).status_code == 200
    taken = client.post(f"/tasks/{assess}/claim", headers=other_assessor)
    assert taken.status_code == 409 and taken.json()["type"] == "/problems/conflict"

    cancelled = client.post(f"/instances/{instance_id}/cancel", headers=learner, json={"reason": "wrong credential"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    late = client.post(f"/tasks/{assess}/complete", headers=assessor, json={"data": {"score": 80, "feedback": "ok"}})
    assert late.status_code == 409
    assert client.get(f"/tasks/{assess}", headers=assessor).json()["status"] == "cancelled"


def test_a_command_answers_the_state_it_saved_and_the_position_of_its_last_event(
    client: Any, app: Any, settings: Any
) -> None:
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    started = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                          headers=learner)
    instance_id = started.json()["id"]
    assert int(started.headers["workflow-log-position"]) == app.recorder.max_notification_id()
    fresh = client.get(f"/instances/{instance_id}", headers=learner).json()
    assert {k: fresh[k] for k in started.json()} == started.json()  # what it saved is what a read shows
    done = submit_evidence(client, app, settings, learner, instance_id)
    assess = only_open_task(client, learner, instance_id)
    claimed = client.post(f"/tasks/{assess}/claim", headers=assessor)
    assert claimed.headers["etag"] == '"2"' and claimed.json()["assignee"] == ASSESSOR[0]
    (claim_event,) = app.recorder.select_notifications(start=int(claimed.headers["workflow-log-position"]), limit=1)
    assert claim_event.topic.endswith("Task.Claimed") and str(claim_event.originator_id) == assess
    assert int(done.headers["workflow-log-position"]) < int(claimed.headers["workflow-log-position"])
    fresh = client.get(f"/tasks/{assess}", headers=assessor).json()
    assert {k: fresh[k] for k in claimed.json()} == claimed.json()

    again = client.post(f"/tasks/{assess}/claim", headers=assessor)  # changes nothing: answers the head
    assert again.status_code == 200 and again.headers["etag"] == '"2"'
    assert int(again.headers["workflow-log-position"]) == app.recorder.max_notification_id()


def test_if_match_still_holds_when_the_command_saves(client: Any, app: Any, settings: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another admin reassigns the task between the If-Match check and the save: 412, and
    the other admin's change stands (before, the command applied on top of it)."""
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    admin = auth(settings, "admin-avi", ["admin"])
    instance_id, assess = to_assessment(client, app, settings, learner)
    claimed = client.post(f"/tasks/{assess}/claim", headers=assessor)
    assert claimed.headers["etag"] == '"2"'

    real = type(app).visible_task
    raced: list[str] = []

    def racing(self: Any, actor: Any, task_id_: Any) -> Any:
        task = real(self, actor, task_id_)
        if not raced:  # the If-Match check has read version 2; now someone else moves it on
            raced.append("bo")
            self.reassign_task(Actor.of("admin-other", "admin"), task_id_, "assessor-bo")
        return task

    monkeypatch.setattr(type(app), "visible_task", racing)
    refused = client.post(f"/tasks/{assess}/reassign", headers={**admin, "If-Match": '"2"'},
                          json={"assignee": "assessor-carl"})
    monkeypatch.undo()
    assert refused.status_code == 412, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    task = client.get(f"/tasks/{assess}", headers=admin)
    assert (task.json()["assignee"], task.headers["etag"]) == ("assessor-bo", '"3"')

    # without If-Match, or with the version it is at, the same command goes through
    assert client.post(f"/tasks/{assess}/reassign", headers={**admin, "If-Match": '"3"'},
                       json={"assignee": "assessor-carl"}).status_code == 200


def test_deploy_honours_if_match_on_the_deployment(client: Any, app: Any, settings: Any) -> None:
    admin = auth(settings, "admin-avi", ["admin"])
    credential = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
    skill = app.get_definition(credential).skill_id
    current = client.get(f"/deployments/{skill}", headers=admin).headers["etag"]
    refused = client.post(f"/definitions/{credential}/versions/1/deploy", headers={**admin, "If-Match": '"999"'})
    deployed = client.post(f"/definitions/{credential}/versions/1/deploy", headers={**admin, "If-Match": current})
    assert refused.status_code == 412, refused.text
    assert deployed.status_code == 200, deployed.text


def test_an_admin_deletes_an_ended_instance_and_its_tasks(app: Any, settings: Any, schema_database: Any) -> None:
    """INSTANCE_DELETED and TASK_DELETED are two of the twelve published events; nothing could
    produce them."""
    from application.queries import audit

    load_example_catalog(app)
    learner, admin = auth(settings, *LEARNER), auth(settings, "admin-al", ["admin"])
    with api_client(settings, app, schema_database, run_projections=True) as client:
        instance_id = client.post("/instances", json={"credential_id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"},
                                  headers=learner).json()["id"]
        by_learner = client.delete(f"/instances/{instance_id}", headers=learner)
        running = client.delete(f"/instances/{instance_id}", headers=admin)
        assert client.post(f"/instances/{instance_id}/cancel", json={"reason": "test"}, headers=learner).status_code == 200
        deleted = client.delete(f"/instances/{instance_id}", headers=admin)
        head = app.recorder.max_notification_id()
        again = client.delete(f"/instances/{instance_id}", headers=admin)
        missing = client.delete("/instances/00000000-0000-4000-8000-000000000000", headers=admin)
        task_id = app.get_instance(UUID(instance_id)).all_tasks[0]
        seen_by = {who: (client.get(f"/instances/{instance_id}", headers=headers).status_code,
                         client.get(f"/instances/{instance_id}/files", headers=headers).status_code,
                         client.get(f"/tasks/{task_id}", headers=headers).status_code)
                   for who, headers in (("learner", learner), ("admin", admin))}
        position = {"wait_for": app.recorder.max_notification_id()}
        listed = {who: [i["id"] for i in client.get("/instances", params={**position, **extra}, headers=headers).json()["items"]]
                  for who, headers, extra in (("learner", learner, {}), ("admin", admin, {"user_id": LEARNER[0]}))}
    assert by_learner.status_code == 403
    assert running.status_code == 409 and "cancel" in running.json()["detail"]
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted", deleted.text
    assert again.status_code == 200 and app.recorder.max_notification_id() == head  # nothing more
    assert missing.status_code == 404
    assert seen_by == {"learner": (404, 404, 404), "admin": (200, 200, 200)}  # gone for all but the audit
    assert listed == {"learner": [], "admin": [instance_id]}
    types = [c.type for c in audit.global_log(app, after=0, limit=1000)]
    assert "SKILLBASE_WORKFLOW_INSTANCE_DELETED" in types and "SKILLBASE_WORKFLOW_TASK_DELETED" in types
    instance = app.get_instance(UUID(instance_id))
    assert all(task.status == "deleted" for task in app.get_tasks(list(instance.all_tasks)))
