"""Who may do what, endpoint by endpoint: anonymous, the owning learner, another learner,
a member and a non-member of the task's group, and an admin. A learner never learns that
another learner's instance or task exists (404, not 403)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from application.engine.builtin_templates import load_template
from interface.examples import load_example_catalog
from interface.http.testing import ADMIN, ASSESSOR, LEARNER, OTHER_LEARNER, OUTSIDER, api_client, auth
from tests.integration.test_http_process import attach_evidence, only_open_task

pytestmark = pytest.mark.integration

ACTORS = ("anonymous", "owner", "other_learner", "member", "non_member", "admin")
IDENTITIES = {"owner": LEARNER, "other_learner": OTHER_LEARNER, "member": ASSESSOR, "non_member": OUTSIDER,
              "admin": ADMIN}
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
SKILL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90"
TEMPLATE = {name: data.decode() for name, data in load_template("credential-assessment").items()}
ASSESSMENT = {"data": {"score": 80, "feedback": "Reviewed."}}


@dataclass(frozen=True)
class World:
    instance: str
    task: str  # the open 'Assess evidence' task, offered to the assessor group


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # formatted with the world
    expected: tuple[int, int, int, int, int, int]  # in ACTORS order
    body: Any = None
    claimed: bool = False  # the assessor has claimed the task first


CASES = [
    Case("GET", "/health", (200, 200, 200, 200, 200, 200)),
    Case("GET", "/ready", (200, 200, 200, 200, 200, 200)),
    Case("GET", "/metrics", (401, 403, 403, 403, 403, 200)),
    Case("POST", "/instances", (401, 201, 201, 201, 201, 201), {"credential_id": CREDENTIAL}),
    Case("GET", "/instances/{w.instance}", (401, 200, 404, 404, 404, 200)),
    Case("POST", "/instances/{w.instance}/cancel", (401, 200, 404, 404, 404, 200), {"reason": "no longer needed"}),
    Case("GET", "/tasks/{w.task}", (401, 200, 404, 200, 404, 200)),
    Case("POST", "/tasks/{w.task}/claim", (401, 403, 404, 200, 404, 403)),
    Case("POST", "/tasks/{w.task}/unclaim", (401, 403, 404, 200, 404, 200), claimed=True),
    Case("POST", "/tasks/{w.task}/complete", (401, 403, 404, 200, 404, 403), ASSESSMENT, claimed=True),
    # admins only, refused before the task is looked up: a 403 tells nothing about the task
    Case("POST", "/tasks/{w.task}/reassign", (401, 403, 403, 403, 403, 200), {"assignee": "assessor-bo"}),
    Case("GET", "/definitions/" + CREDENTIAL, (401, 403, 403, 403, 403, 200)),
    Case("GET", f"/definitions/{CREDENTIAL}/versions/1", (401, 403, 403, 403, 403, 200)),
    Case("POST", f"/definitions/{CREDENTIAL}/versions", (401, 403, 403, 403, 403, 200), {"files": TEMPLATE}),
    Case("POST", f"/definitions/{CREDENTIAL}/versions/1/deploy", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/deployments/" + SKILL, (401, 403, 403, 403, 403, 200)),
    Case("POST", f"/deployments/{SKILL}/retire", (401, 403, 403, 403, 403, 200)),
    Case("POST", f"/deployments/{SKILL}/activate", (401, 403, 403, 403, 403, 200)),
    # admins only, refused before the instance is looked up; the admin meets a running instance
    Case("DELETE", "/instances/{w.instance}", (401, 403, 403, 403, 403, 409)),
    Case("POST", "/instances/{w.instance}/incidents/none/retry", (401, 403, 403, 403, 403, 404)),
    Case("GET", "/audit/instance/{w.instance}", (401, 403, 403, 403, 403, 200)),
    Case("GET", "/audit/task/{w.task}", (401, 403, 403, 403, 403, 200)),
]


@pytest.fixture
def client(app: Any, settings: Any, schema_database: Any) -> Iterator[Any]:
    load_example_catalog(app)
    with api_client(settings, app, schema_database) as client:
        yield client


def make_world(client: Any, app: Any, settings: Any, claimed: bool) -> World:
    learner = auth(settings, *LEARNER)
    instance = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
    submit = only_open_task(client, learner, instance)
    file_id = attach_evidence(app, settings, instance)
    client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.", "evidence_files": [file_id]}})
    task = only_open_task(client, learner, instance)
    if claimed:
        assert client.post(f"/tasks/{task}/claim", headers=auth(settings, *ASSESSOR)).status_code == 200
    return World(instance=instance, task=task)


def headers_of(settings: Any, actor: str) -> dict[str, str]:
    return {} if actor == "anonymous" else auth(settings, *IDENTITIES[actor])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
def test_authorization_matrix(client: Any, app: Any, settings: Any, case: Case) -> None:
    seen = {}
    for actor in ACTORS:
        needs_world = "{w." in case.path or case.claimed
        world = make_world(client, app, settings, case.claimed) if needs_world else None
        request: Callable[..., Any] = getattr(client, case.method.lower())
        kwargs = {"json": case.body} if case.body is not None else {}
        response = request(case.path.format(w=world), headers=headers_of(settings, actor), **kwargs)
        seen[actor] = response.status_code
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), response.text
    assert seen == dict(zip(ACTORS, case.expected)), seen


def test_a_bad_token_is_401(client: Any, settings: Any) -> None:
    import jwt

    good = auth(settings, *LEARNER)["Authorization"].split()[1]
    header, payload, _ = good.split(".")
    unsigned = jwt.encode({"sub": "x", "aud": settings.jwt_audience, "exp": 9999999999}, None, algorithm="none")
    for token in (f"{header}.{payload}.AAAA", unsigned, "garbage",
                  auth(settings, *LEARNER, ttl=-3600)["Authorization"].split()[1],
                  auth(settings, *LEARNER, aud="another-service")["Authorization"].split()[1],
                  jwt.encode({"sub": "x", "aud": settings.jwt_audience, "exp": 9999999999}, "another-key-of-at-least-32-bytes!!", "HS256")):
        response = client.get("/instances/6f1d1f0e-8a7c-5b8e-9d3a-5b1c0e2f4a61",
                              headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert response.headers["www-authenticate"].startswith("Bearer")
