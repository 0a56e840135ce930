"""Who may do what on the endpoints the integration matrix (tests/integration/
test_http_authorization.py) does not cover: the lists on the read models, dashboards, the
audit trail of every entity kind, and the evidence files (upload, list, download). Each
endpoint against anonymous, the owning learner, another learner, a member and a
non-member of the task's group, and an admin; and what each list shows to whom."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from domain.ids import definition_id, deployment_id
from interface.examples import load_example_catalog
from interface.http.testing import ADMIN, ASSESSOR, LEARNER, OTHER_LEARNER, OUTSIDER, api_client, auth

pytestmark = pytest.mark.reliability

ACTORS = ("anonymous", "owner", "other_learner", "member", "non_member", "admin")
IDENTITIES = {"owner": LEARNER, "other_learner": OTHER_LEARNER, "member": ASSESSOR, "non_member": OUTSIDER,
              "admin": ADMIN}
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
SKILL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90"
FILE = {"content": b"a 6 mm fillet weld, even bead\n",
        "headers": {"Content-Type": "text/plain", "Content-Disposition": 'attachment; filename="weld.txt"'}}


@dataclass(frozen=True)
class World:
    instance: str
    task: str  # 'Assess evidence', open, offered to the assessor group
    file: str


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    expected: tuple[int, ...]  # in ACTORS order
    upload: bool = False


CASES = [
    Case("GET", "/instances", (401, 200, 200, 200, 200, 200)),
    Case("GET", "/instances?user_id=learner-lin", (401, 200, 403, 403, 403, 200)),
    Case("GET", "/tasks?inbox=mine", (401, 200, 200, 200, 200, 200)),
    Case("GET", "/tasks?inbox=groups", (401, 200, 200, 200, 200, 200)),
    Case("GET", "/tasks?inbox=all", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/definitions", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/deployments", (401, 403, 403, 403, 403, 200)),
    Case("GET", f"/dashboard?credential_id={CREDENTIAL}", (401, 403, 403, 403, 403, 200)),
    Case("GET", f"/dashboard?skill_id={SKILL}", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/metrics", (401, 403, 403, 403, 403, 200)),
    Case("GET", f"/audit/definition/{definition_id(CREDENTIAL)}", (401, 403, 403, 403, 403, 200)),
    Case("GET", f"/audit/deployment/{deployment_id(SKILL)}", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/audit/instance/{w.instance}", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/audit/task/{w.task}", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/instances/{w.instance}/files", (401, 200, 404, 200, 404, 200)),
    Case("GET", "/instances/{w.instance}/files/{w.file}", (401, 200, 404, 200, 404, 200)),
    # A group member reads the evidence of its task but adds none: the instance is not theirs.
    Case("POST", "/instances/{w.instance}/files", (401, 201, 404, 404, 404, 201), upload=True),
]


@pytest.fixture
def client(app: Any, settings: Any, schema_database: Any) -> Iterator[Any]:
    load_example_catalog(app)
    with api_client(settings, app, schema_database, run_projections=True) as client:
        yield client


def make_world(client: Any) -> World:
    learner = auth(client.app.state.services.settings, *LEARNER)
    started = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner)
    instance, (submit,) = started.json()["id"], started.json()["open_task_ids"]
    uploaded = client.post(f"/instances/{instance}/files", headers={**learner, **FILE["headers"]},
                           content=FILE["content"])
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    done = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.", "evidence_files": [file_id]}})
    assert done.status_code == 200, done.text
    (task,) = client.get(f"/instances/{instance}", headers=learner).json()["open_task_ids"]
    return World(instance=instance, task=task, file=file_id)


def headers_of(settings: Any, actor: str) -> dict[str, str]:
    return {} if actor == "anonymous" else auth(settings, *IDENTITIES[actor])


def test_every_endpoint_against_every_role(client: Any, settings: Any, record: Any) -> None:
    world = make_world(client)
    wrong = []
    for case in CASES:
        seen = {}
        for actor in ACTORS:
            path = case.path.format(w=world)
            headers = headers_of(settings, actor)
            if case.upload:
                response = client.post(path, headers={**headers, **FILE["headers"]}, content=FILE["content"])
            else:
                response = client.request(case.method, path, headers=headers)
            seen[actor] = response.status_code
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json"), response.text
        if seen != dict(zip(ACTORS, case.expected)):
            wrong.append(f"{case.method} {case.path}: {seen}")
    record("authorization", endpoints=len(CASES), roles=len(ACTORS), requests=len(CASES) * len(ACTORS),
           unexpected=len(wrong))
    assert not wrong, "\n".join(wrong)


def test_lists_show_each_role_only_its_own(client: Any, settings: Any) -> None:
    world = make_world(client)
    position = {"wait_for": str(client.app.state.services.service.recorder.max_notification_id())}

    def ids(path: str, actor: str, **params: str) -> set[str]:
        response = client.get(path, params={**position, **params}, headers=headers_of(settings, actor))
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert world.instance in ids("/instances", "owner")
    assert world.instance in ids("/instances", "admin", user_id=LEARNER[0])
    assert world.instance in ids("/instances", "admin")  # an admin's list is everyone's
    for actor in ("other_learner", "member", "non_member"):
        assert world.instance not in ids("/instances", actor), actor
    assert world.task in ids("/tasks", "member", inbox="groups")
    for actor in ("owner", "other_learner", "non_member"):
        assert world.task not in ids("/tasks", actor, inbox="groups"), actor
        assert world.task not in ids("/tasks", actor, inbox="mine"), actor
    assert world.task in ids("/tasks", "admin", inbox="all")
