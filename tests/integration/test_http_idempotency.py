"""Idempotency-Key: the same command sent twice — one after the other, at the same moment,
after a restart, after losing the stored response — has one effect."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from application.bootstrap import bootstrap
from interface.examples import load_example_catalog
from interface.http.app import create_app
from interface.http.testing import ASSESSOR, LEARNER, api_client, auth
from tests.integration.test_http_process import attach_evidence, only_open_task, to_assessment

pytestmark = pytest.mark.integration
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"


def instances_of(app: Any) -> int:
    return sum(1 for n in app.recorder.select_notifications(start=1, limit=10_000) if "Instance.Started" in n.topic
               or n.topic.endswith("Started"))


def test_same_key_same_body_replays_the_response(app: Any, settings: Any, schema_database: Any) -> None:
    load_example_catalog(app)
    learner = {**auth(settings, *LEARNER), "Idempotency-Key": "start-1"}
    with api_client(settings, app, schema_database) as client:
        first = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner)
        again = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner)
        other = client.post("/instances", json={"credential_id": "another"}, headers=learner)
        without_key = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=auth(settings, *LEARNER))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422 and other.json()["errors"][0]["path"] == "header:Idempotency-Key"
    assert without_key.json()["id"] != first.json()["id"]
    assert instances_of(app) == 2


def test_keys_belong_to_their_user(app: Any, settings: Any, schema_database: Any) -> None:
    load_example_catalog(app)
    with api_client(settings, app, schema_database) as client:
        a = client.post("/instances", json={"credential_id": CREDENTIAL},
                        headers={**auth(settings, *LEARNER), "Idempotency-Key": "k"})
        b = client.post("/instances", json={"credential_id": CREDENTIAL},
                        headers={**auth(settings, "learner-sam"), "Idempotency-Key": "k"})
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


def test_concurrent_duplicates_have_one_effect(app: Any, settings: Any, schema_database: Any) -> None:
    load_example_catalog(app)
    headers = {**auth(settings, *LEARNER), "Idempotency-Key": "together"}

    async def send_eight() -> list[Any]:
        async with AsyncTestClient(create_app(settings, service=app, database=schema_database)) as client:
            return await asyncio.gather(*[
                client.post("/instances", json={"credential_id": CREDENTIAL}, headers=headers) for _ in range(8)])

    responses = asyncio.run(send_eight())
    # A duplicate waits up to 1 s for the first attempt's answer and replays it; on a machine
    # so slow that a start takes longer, it gets 409 (retry shortly) instead: never a second start.
    created = [r for r in responses if r.status_code == 201]
    assert created and {r.status_code for r in responses} <= {201, 409}
    assert len({r.json()["id"] for r in created}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in created) == len(created) - 1
    assert instances_of(app) == 1


def test_a_restart_replays_the_stored_response(app: Any, settings: Any, schema_database: Any) -> None:
    load_example_catalog(app)
    learner = auth(settings, *LEARNER)
    with api_client(settings, app, schema_database) as client:
        started = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
        submit = only_open_task(client, learner, started)
        file_id = attach_evidence(app, settings, started)
        body = {"data": {"statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.",
                         "evidence_files": [file_id]}}
        first = client.post(f"/tasks/{submit}/complete", json=body, headers={**learner, "Idempotency-Key": "done"})
    restarted = bootstrap(settings, database=schema_database)
    try:
        with api_client(settings, restarted, schema_database) as client:
            again = client.post(f"/tasks/{submit}/complete", json=body, headers={**learner, "Idempotency-Key": "done"})
            instance = client.get(f"/instances/{started}", headers=learner).json()
    finally:
        restarted.close()
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert len(instance["open_task_ids"]) == 1 and instance["version"] == 3  # started, file, one advance


def test_a_lost_response_is_recognised_as_done(app: Any, settings: Any, schema_database: Any) -> None:
    """The process died after the events committed and before the response was stored:
    the retry runs the command again, which sees its own effect and answers 200, not 409."""
    load_example_catalog(app)
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    with api_client(settings, app, schema_database) as client:
        _instance, assess = to_assessment(client, app, settings, learner)
        client.post(f"/tasks/{assess}/claim", headers=assessor)
        body, key = {"data": {"score": 90, "feedback": "Good."}}, {"Idempotency-Key": "assess-1"}
        first = client.post(f"/tasks/{assess}/complete", json=body, headers={**assessor, **key})
        forget_responses(schema_database)
        retry = client.post(f"/tasks/{assess}/complete", json=body, headers={**assessor, **key})
        plain_retry = client.post(f"/tasks/{assess}/complete", json=body, headers=assessor)
        cancel = {"reason": "moving abroad"}
        other = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
        client.post(f"/instances/{other}/cancel", json=cancel, headers={**learner, "Idempotency-Key": "c"})
        forget_responses(schema_database)
        cancel_retry = client.post(f"/instances/{other}/cancel", json=cancel, headers={**learner, "Idempotency-Key": "c"})
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert plain_retry.status_code == 409
    assert cancel_retry.status_code == 200 and cancel_retry.json()["status"] == "cancelled"


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "caf\u00e9".encode(), "tab\tkey"],
                         ids=["empty", "256 chars", "space", "not ascii", "tab"])
def test_every_bad_key_is_the_same_422(app: Any, settings: Any, schema_database: Any, key: str | bytes) -> None:
    with api_client(settings, app, schema_database) as client:
        response = client.post("/instances", json={"credential_id": CREDENTIAL},
                               headers={**auth(settings, *LEARNER), "Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert [e["path"] for e in response.json()["errors"]] == ["header:Idempotency-Key"]


def test_a_255_character_key_is_accepted(app: Any, settings: Any, schema_database: Any) -> None:
    load_example_catalog(app)
    with api_client(settings, app, schema_database) as client:
        response = client.post("/instances", json={"credential_id": CREDENTIAL},
                               headers={**auth(settings, *LEARNER), "Idempotency-Key": "x" * 255})
    assert response.status_code == 201, response.text


def test_a_bad_query_parameter_names_its_source(app: Any, settings: Any, schema_database: Any) -> None:
    with api_client(settings, app, schema_database) as client:
        response = client.get("/instances", params={"limit": -1}, headers=auth(settings, *LEARNER))
    assert response.status_code == 400
    assert [e["path"] for e in response.json()["errors"]] == ["query:limit"]


def forget_responses(schema_database: Any) -> None:
    """What a process that died after its command's commit and before storing the answer leaves."""
    with psycopg.connect(schema_database.conninfo(), autocommit=True) as connection:
        connection.execute(f'DELETE FROM "{schema_database.schema}".http_idempotency')


def test_a_lost_response_with_if_match_is_answered_as_done_with_its_log_position(
    app: Any, settings: Any, schema_database: Any
) -> None:
    """The retry names the version its first attempt started from, which that attempt moved
    on: its effect is answered (not 412), with a log position to read it by."""
    load_example_catalog(app)
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    with api_client(settings, app, schema_database) as client:
        _instance, assess = to_assessment(client, app, settings, learner)
        version = client.get(f"/tasks/{assess}", headers=assessor).headers["etag"]
        claimed = client.post(f"/tasks/{assess}/claim", headers={**assessor, "If-Match": version,
                                                                 "Idempotency-Key": "claim-1"})
        forget_responses(schema_database)
        claim_retry = client.post(f"/tasks/{assess}/claim", headers={**assessor, "If-Match": version,
                                                                     "Idempotency-Key": "claim-1"})
        body = {"data": {"score": 90, "feedback": "Good."}}
        at = {**assessor, "If-Match": claimed.headers["etag"], "Idempotency-Key": "assess-2"}
        first = client.post(f"/tasks/{assess}/complete", json=body, headers=at)
        forget_responses(schema_database)
        retry = client.post(f"/tasks/{assess}/complete", json=body, headers=at)
        other = {"data": {"score": 40, "feedback": "Changed my mind."}}
        stale = client.post(f"/tasks/{assess}/complete", json=other, headers={**at, "Idempotency-Key": "assess-3"})
    assert claimed.status_code == claim_retry.status_code == 200, claim_retry.text
    assert claim_retry.json() == claimed.json()
    assert first.status_code == retry.status_code == 200, retry.text
    assert retry.json() == first.json()
    assert int(retry.headers["workflow-log-position"]) >= int(first.headers["workflow-log-position"])
    assert stale.status_code == 412  # another command: the version it names is gone


def test_a_keyed_cancel_is_not_answered_with_someone_elses_cancellation(
    app: Any, settings: Any, schema_database: Any
) -> None:
    load_example_catalog(app)
    learner, admin = auth(settings, *LEARNER), auth(settings, "admin-al", ["admin"])
    reason = {"reason": "duplicate"}
    with api_client(settings, app, schema_database) as client:
        started = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
        by_admin = client.post(f"/instances/{started}/cancel", json=reason, headers=admin)
        by_learner = client.post(f"/instances/{started}/cancel", json=reason,
                                 headers={**learner, "Idempotency-Key": "never-sent-before"})
    assert by_admin.status_code == 200
    assert by_learner.status_code == 409, by_learner.text


def test_keys_of_users_whose_ids_hold_slashes_name_different_instances(
    app: Any, settings: Any, schema_database: Any
) -> None:
    load_example_catalog(app)
    with api_client(settings, app, schema_database) as client:
        first = client.post("/instances", json={"credential_id": CREDENTIAL},
                            headers={**auth(settings, "org"), "Idempotency-Key": "alice/K"})
        second = client.post("/instances", json={"credential_id": CREDENTIAL},
                             headers={**auth(settings, "org/alice"), "Idempotency-Key": "K"})
    assert first.status_code == second.status_code == 201, second.text
    assert first.json()["id"] != second.json()["id"]


# -- admin commands and who may be answered with an earlier effect (review, 2026-11-27) --------

SKILL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90"


def second_bundle() -> dict[str, str]:
    from application.engine.builtin_templates import load_template

    files = {name: data.decode() for name, data in load_template("credential-assessment").items()}
    files["assess-evidence.schema.json"] += "\n"
    return files


@pytest.mark.parametrize("command", ["upload", "deploy", "retire", "activate"])
def test_an_admin_command_whose_answer_was_lost_is_answered_as_done_despite_its_if_match(
    app: Any, settings: Any, schema_database: Any, command: str
) -> None:
    """The retry names the version its first attempt moved on from: its effect is answered
    with the first attempt's status, not 412."""
    load_example_catalog(app)
    admin = auth(settings, "admin-al", ["admin"])
    with api_client(settings, app, schema_database) as client:
        if command == "deploy":
            assert client.post(f"/definitions/{CREDENTIAL}/versions", json={"files": second_bundle()},
                               headers=admin).status_code == 201
        if command == "activate":
            assert client.post(f"/deployments/{SKILL}/retire", headers=admin).status_code == 200
        entity = f"/definitions/{CREDENTIAL}" if command == "upload" else f"/deployments/{SKILL}"
        keyed = {**admin, "If-Match": client.get(entity, headers=admin).headers["etag"], "Idempotency-Key": command}
        path, body = {
            "upload": (f"/definitions/{CREDENTIAL}/versions", {"files": second_bundle()}),
            "deploy": (f"/definitions/{CREDENTIAL}/versions/2/deploy", None),
            "retire": (f"/deployments/{SKILL}/retire", None),
            "activate": (f"/deployments/{SKILL}/activate", None),
        }[command]
        first = client.post(path, json=body, headers=keyed)
        forget_responses(schema_database)  # the process died between the events' commit and the answer's
        retry = client.post(path, json=body, headers=keyed)
    assert first.status_code == (201 if command == "upload" else 200), first.text
    assert (retry.status_code, retry.json()) == (first.status_code, first.json()), retry.text


def test_an_upload_of_a_bundle_that_already_is_a_version_answers_200_whatever_its_key(
    app: Any, settings: Any, schema_database: Any
) -> None:
    """201 only when this request added the version. A keyed retry whose first answer was lost
    (without If-Match) cannot tell its own version from an earlier request's: it answers
    that version with 200 (ADR 0006 amendment)."""
    load_example_catalog(app)
    admin = auth(settings, "admin-al", ["admin"])
    path = f"/definitions/{CREDENTIAL}/versions"
    with api_client(settings, app, schema_database) as client:
        first = client.post(path, json={"files": second_bundle()}, headers={**admin, "Idempotency-Key": "up-1"})
        forget_responses(schema_database)
        retry = client.post(path, json={"files": second_bundle()}, headers={**admin, "Idempotency-Key": "up-1"})
        other_key = client.post(path, json={"files": second_bundle()}, headers={**admin, "Idempotency-Key": "up-2"})
    assert first.status_code == 201, first.text
    assert retry.status_code == other_key.status_code == 200
    assert retry.json() == other_key.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]


def test_a_stale_if_match_with_a_fresh_key_never_answers_someone_who_may_not_run_the_command(
    app: Any, settings: Any, schema_database: Any
) -> None:
    """An earlier effect is answered only when this user made it: an assessor may not reassign
    (not even to themselves), a learner may not hand back a group task."""
    load_example_catalog(app)
    learner, assessor = auth(settings, *LEARNER), auth(settings, *ASSESSOR)
    with api_client(settings, app, schema_database) as client:
        _instance, assess = to_assessment(client, app, settings, learner)
        stale = client.get(f"/tasks/{assess}", headers=assessor).headers["etag"]
        assert client.post(f"/tasks/{assess}/claim", headers=assessor).status_code == 200
        reassign = client.post(f"/tasks/{assess}/reassign", json={"assignee": ASSESSOR[0]},
                               headers={**assessor, "If-Match": stale, "Idempotency-Key": "never-used-1"})
        assert client.post(f"/tasks/{assess}/unclaim", headers=assessor).status_code == 200
        unclaim = client.post(f"/tasks/{assess}/unclaim",
                              headers={**learner, "If-Match": stale, "Idempotency-Key": "never-used-2"})
        plain_unclaim = client.post(f"/tasks/{assess}/unclaim", headers=learner)
        own_retry = client.post(f"/tasks/{assess}/unclaim",
                                headers={**assessor, "If-Match": stale, "Idempotency-Key": "never-used-3"})
    assert reassign.status_code == 403, reassign.text
    assert unclaim.status_code == 412, unclaim.text
    assert plain_unclaim.status_code == 403, plain_unclaim.text
    assert own_retry.status_code == 200, own_retry.text  # the assessor's own hand-back


def test_an_if_match_a_refused_command_checked_does_not_outlive_it(
    app: Any, settings: Any, schema_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version an If-Match named was kept on the worker thread after its command failed:
    later file uploads on that thread (which send no If-Match) were refused with 412."""
    import msgspec

    from tests.integration.test_http_process import attach_evidence

    load_example_catalog(app)
    settings = msgspec.structs.replace(settings, http_command_threads=1)  # every request on one thread
    learner = auth(settings, *LEARNER)
    with api_client(settings, app, schema_database) as client:
        instance = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]
        etag = client.get(f"/instances/{instance}", headers=learner).headers["etag"]
        real = type(app).cancel_instance

        def racing(self: Any, actor: Any, instance_id: Any, reason: str) -> Any:
            attach_evidence(app, settings, instance)  # another writer moves the instance on
            return real(self, actor, instance_id, reason)

        monkeypatch.setattr(type(app), "cancel_instance", racing)
        refused = client.post(f"/instances/{instance}/cancel", json={"reason": "r"},
                              headers={**learner, "If-Match": etag})
        monkeypatch.undo()
        uploads = [client.post(f"/instances/{instance}/files", content=b"notes %d\n" % n,
                               headers={**learner, "Content-Type": "text/plain",
                                        "Content-Disposition": f'attachment; filename="n{n}.txt"'})
                   for n in range(2)]
    assert refused.status_code == 412, refused.text
    assert [up.status_code for up in uploads] == [201, 201], [up.text for up in uploads]


def test_duplicates_of_a_slow_keyed_command_do_not_hold_every_command_thread(
    app: Any, settings: Any, schema_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate waited on the first attempt's row for as long as it ran, in a command
    thread: a slow claim and three client retries took all four, and another user's start
    waited behind them. Now a duplicate waits at most 1 s, then gets 409 (retry shortly)."""
    import threading
    import time

    from domain.identity import Actor

    load_example_catalog(app)
    task = app.get_instance(app.start_instance(Actor.of(LEARNER[0]), CREDENTIAL)).open_tasks[0]
    real = type(app).claim_task

    def slow(self: Any, actor: Any, task_id_: Any) -> None:
        time.sleep(4)  # a lock wait in PostgreSQL, say
        return real(self, actor, task_id_)

    monkeypatch.setattr(type(app), "claim_task", slow)
    keyed = {**auth(settings, *LEARNER), "Idempotency-Key": "slow-1"}
    answers: list[Any] = []
    with api_client(settings, app, schema_database) as client:
        tries = [threading.Thread(target=lambda: answers.append(client.post(f"/tasks/{task}/claim", headers=keyed)))
                 for _ in range(4)]  # the first attempt and three client retries
        for attempt in tries:
            attempt.start()
            time.sleep(0.1)
        began = time.monotonic()
        other = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=auth(settings, "learner-sam"))
        took = time.monotonic() - began
        for attempt in tries:
            attempt.join(20)
    assert other.status_code == 201
    assert took < 2.5, f"an unrelated user's command waited {took:.1f} s behind duplicates"
    assert sorted(answer.status_code for answer in answers) == [200, 409, 409, 409]
    assert all("still being handled" in a.json()["detail"] and a.headers["retry-after"] == "1"
               for a in answers if a.status_code == 409)


@pytest.mark.parametrize("credential_id", ["cred-\u8a3c\u660e", "cred-caf\u00e9", "cred with space"])
def test_an_upload_to_a_credential_id_outside_ascii_answers_its_location_percent_encoded(
    app: Any, settings: Any, schema_database: Any, credential_id: str
) -> None:
    """A catalog id is any text; the Location header used to carry it raw, and the answer
    (stored under the key first) failed to encode: a 500, replayed to every retry."""
    from urllib.parse import quote

    app.upsert_skill(skill_id="skill-x", version=1, name="S", description="", status="active")
    app.upsert_credential(credential_id=credential_id, version=1, skill_id="skill-x", name="C", description="")
    admin = {**auth(settings, "admin-al", ["admin"]), "Idempotency-Key": "u"}
    path = f"/definitions/{quote(credential_id, safe='')}/versions"
    with api_client(settings, app, schema_database) as client:
        first = client.post(path, json={"files": second_bundle()}, headers=admin)
        again = client.post(path, json={"files": second_bundle()}, headers=admin)
        located = client.get(first.headers["location"], headers=admin)
    assert first.status_code == again.status_code == 201, first.text
    assert first.headers["location"] == f"{path}/2"
    assert located.status_code == 200 and located.json()["number"] == 2


def test_a_start_key_whose_answer_was_lost_sent_with_another_credential_is_a_422(
    app: Any, settings: Any, schema_database: Any
) -> None:
    """The same key with another request is a 422 also when the first answer was lost: the
    key's instance exists for the first credential (it was a 409 'already exists')."""
    load_example_catalog(app)
    app.upsert_credential(credential_id="cred-2", version=1, skill_id="4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90",
                          name="Second", description="")
    keyed = {**auth(settings, *LEARNER), "Idempotency-Key": "start-once"}
    with api_client(settings, app, schema_database) as client:
        first = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=keyed)
        forget_responses(schema_database)
        other = client.post("/instances", json={"credential_id": "cred-2"}, headers=keyed)
    assert first.status_code == 201
    assert other.status_code == 422, other.text
    assert other.json()["errors"][0]["path"] == "header:Idempotency-Key"


@pytest.mark.parametrize("command", ["upload", "deploy", "retire"])
def test_another_admins_change_is_not_answered_as_this_admins_retry(
    app: Any, settings: Any, schema_database: Any, command: str
) -> None:
    """Admin B with a stale If-Match and a fresh key got 200 for what admin A did; without the
    key the same request is 412."""
    load_example_catalog(app)
    first, second = auth(settings, "admin-al", ["admin"]), auth(settings, "admin-bo", ["admin"])
    with api_client(settings, app, schema_database) as client:
        if command == "deploy":
            assert client.post(f"/definitions/{CREDENTIAL}/versions", json={"files": second_bundle()},
                               headers=first).status_code == 201
        entity = f"/definitions/{CREDENTIAL}" if command == "upload" else f"/deployments/{SKILL}"
        stale = client.get(entity, headers=second).headers["etag"]
        path, body = {
            "upload": (f"/definitions/{CREDENTIAL}/versions", {"files": second_bundle()}),
            "deploy": (f"/definitions/{CREDENTIAL}/versions/2/deploy", None),
            "retire": (f"/deployments/{SKILL}/retire", None),
        }[command]
        assert client.post(path, json=body, headers=first).status_code in (200, 201)
        keyed = client.post(path, json=body, headers={**second, "If-Match": stale, "Idempotency-Key": "b-1"})
        plain = client.post(path, json=body, headers={**second, "If-Match": stale})
    assert keyed.status_code == plain.status_code == 412, keyed.text
