"""POST /messages: a named message for an instance that waits for it, once per message id,
sent by admins (other services hold a service token) or by the instance's own learner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.identity import Actor
from interface.examples import load_example_catalog
from interface.http.testing import (
    ADMIN,
    ASSESSOR,
    LEARNER,
    OTHER_LEARNER,
    api_client,
    auth,
)
from tests.integration.test_http_process import only_open_task

pytestmark = pytest.mark.integration
PAYMENT = "payment_received"
PAID_BPMN = Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "paid-credential.bpmn"


@pytest.fixture
def credential(app: Any) -> str:
    _skill, credential = load_example_catalog(app)
    admin = Actor.of("root", "admin")
    number = app.upload_definition_version(admin, credential, {"paid-credential.bpmn": PAID_BPMN.read_bytes()})
    app.deploy_definition_version(admin, credential, number)
    return credential


@pytest.fixture
def client(app: Any, settings: Any, schema_database: Any, credential: str) -> Iterator[Any]:
    with api_client(settings, app, schema_database) as client:
        yield client


def waiting_instance(client: Any, settings: Any, credential: str) -> str:
    """An instance of the paid credential, waiting for its payment message."""
    learner = auth(settings, *LEARNER)
    instance = client.post("/instances", json={"credential_id": credential}, headers=learner).json()["id"]
    task = only_open_task(client, learner, instance)
    assert client.post(f"/tasks/{task}/complete", json={"data": {}}, headers=learner).status_code == 200
    return instance


def test_an_admin_delivers_a_message_to_a_waiting_instance(client: Any, settings: Any, credential: str) -> None:
    instance = waiting_instance(client, settings, credential)
    body = {"name": PAYMENT, "message_id": "pay-1", "payload": {"amount": 120}, "instance_id": instance}
    answer = client.post("/messages", json=body, headers=auth(settings, *ADMIN))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"message_id": "pay-1", "status": "delivered"}
    assert int(answer.headers["workflow-log-position"]) > 0
    done = client.get(f"/instances/{instance}", headers=auth(settings, *LEARNER)).json()
    assert done["status"] == "completed"

    again = client.post("/messages", json=body, headers=auth(settings, *ADMIN))
    assert again.status_code == 202 and again.json() == {"message_id": "pay-1", "status": "duplicate"}


def test_by_correlation_keys_a_message_nobody_waits_for_is_kept(client: Any, settings: Any) -> None:
    body = {"name": PAYMENT, "message_id": "pay-early", "correlation_keys": {"order": "A-1"}}
    answer = client.post("/messages", json=body, headers=auth(settings, *ADMIN))
    assert answer.status_code == 202 and answer.json()["status"] == "kept"


def test_the_learner_may_not_send_to_their_own_instance(client: Any, settings: Any, credential: str) -> None:
    """A message stands for another service (a payment, a check): the learner who could send
    "payment_received" to their own instance passed a paid credential without paying."""
    instance = waiting_instance(client, settings, credential)
    body = {"name": PAYMENT, "message_id": "pay-own", "instance_id": instance, "payload": {"amount": 0}}
    answer = client.post("/messages", json=body, headers=auth(settings, *LEARNER))
    assert answer.status_code == 403, answer.text
    still = client.get(f"/instances/{instance}", headers=auth(settings, *LEARNER)).json()
    assert still["status"] == "running"


def test_others_may_not_deliver(client: Any, settings: Any, credential: str) -> None:
    instance = waiting_instance(client, settings, credential)
    body = {"name": PAYMENT, "message_id": "pay-2", "instance_id": instance}
    stranger = client.post("/messages", json=body, headers=auth(settings, *OTHER_LEARNER))
    assert stranger.status_code == 404
    assert client.post("/messages", json=body).status_code == 401
    by_keys = {"name": PAYMENT, "message_id": "pay-3", "correlation_keys": {"order": "A-1"}}
    assert client.post("/messages", json=by_keys, headers=auth(settings, *LEARNER)).status_code == 403
    assert client.post("/messages", json=by_keys, headers=auth(settings, *ASSESSOR)).status_code == 403
    still = client.get(f"/instances/{instance}", headers=auth(settings, *LEARNER)).json()
    assert still["status"] == "running"


def test_a_message_is_idempotent_by_key_and_checked(client: Any, settings: Any, credential: str) -> None:
    instance = waiting_instance(client, settings, credential)
    admin = {**auth(settings, *ADMIN), "Idempotency-Key": "deliver-1"}
    body = {"name": PAYMENT, "message_id": "pay-4", "instance_id": instance}
    first = client.post("/messages", json=body, headers=admin)
    replay = client.post("/messages", json=body, headers=admin)
    assert first.json() == replay.json() == {"message_id": "pay-4", "status": "delivered"}
    assert replay.headers["idempotent-replayed"] == "true"
    missing = client.post("/messages", json={"name": PAYMENT}, headers=auth(settings, *ADMIN))
    assert missing.status_code == 422
    neither = client.post("/messages", json={"name": PAYMENT, "message_id": "pay-5"}, headers=auth(settings, *ADMIN))
    assert neither.status_code == 422 and neither.json()["errors"][0]["path"] == "$.correlation_keys"
