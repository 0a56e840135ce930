"""Dependencies failing under a running ``serve``: PostgreSQL restarted under load (a
server of our own), the Kafka broker down, the JuiceFS mount gone, the SMTP server down.
Each time the service answers clearly (503 + Retry-After where it cannot work, never a
500), keeps what it can working, and recovers by itself without a restart."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import pytest

from application.database import ensure_database
from interface.kafka.relay import relay_position
from tests.reliability.checks import (
    aggregates, expected_cloudevent_ids, published_ids, service_on, unexplained_tasks, wait_for_projections,
)
from tests.reliability.conftest import (
    ADMIN, CREDENTIAL, QUICK_BPMN, QUICK_FORM, bearer, deploy_quick, free_port, schema_name, service_env,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]


def journey(client: httpx.Client, n: int, prefix: str = "learner", email: str | None = None) -> tuple[str, str]:
    """Start, then complete the first task; returns (instance id, task id)."""
    headers = bearer(f"{prefix}-{n:03d}", email=email) if email else bearer(f"{prefix}-{n:03d}")
    started = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=headers)
    assert started.status_code == 201, started.text
    task = started.json()["open_task_ids"][0]
    done = client.post(f"/tasks/{task}/complete", json={"data": {"note": "x"}}, headers=headers)
    assert done.status_code == 200, done.text
    return started.json()["id"], task


def test_postgres_restarted_under_load(throwaway_postgres, tmp_path, children, record) -> None:
    database = throwaway_postgres.database(schema_name())
    ensure_database(database)  # serve expects the schema of an external database to exist
    port = free_port()
    serve = children(["serve"], service_env(database, tmp_path, port), port).start()
    client = httpx.Client(base_url=serve.url, timeout=httpx.Timeout(20, connect=3))
    deploy_quick(client)

    outcomes: list[tuple[str, float, int | None, str | None]] = []  # (key, sent at, status, Retry-After)
    lock, stop = threading.Lock(), threading.Event()

    def load(worker: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            key = f"w{worker}-{i}"
            sent_at = time.monotonic()
            try:
                response = client.post("/instances", json={"credential_id": CREDENTIAL},
                                       headers={**bearer(f"learner-{key}"), "Idempotency-Key": key})
                status, retry = response.status_code, response.headers.get("retry-after")
            except httpx.TransportError:
                status, retry = None, None
            with lock:
                outcomes.append((key, sent_at, status, retry))
            if status != 201:
                time.sleep(0.1)

    workers = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(1.5)
    down_at = time.monotonic()
    throwaway_postgres.stop()
    time.sleep(1.0)
    ready_while_down = httpx.get(f"{serve.url}/ready", timeout=10)
    time.sleep(2.0)
    throwaway_postgres.start()
    up_at = time.monotonic()
    wait_until(lambda: httpx.get(f"{serve.url}/ready", timeout=10).status_code == 200, 30, 0.2, "ready again")
    recovered = wait_until(lambda: next((t for _, t, s, _ in reversed(outcomes) if s == 201 and t > up_at), None),
                           30, 0.1, "a command succeeds again")
    time.sleep(1.0)
    stop.set()
    for worker in workers:
        worker.join(30)

    failed = [(key, status) for key, _, status, _ in outcomes if status != 201]
    retried = Counter()
    for key, _ in failed:  # a client retries what was refused, with the same key
        worker = key.split("-")[0]
        response = client.post("/instances", json={"credential_id": CREDENTIAL},
                               headers={**bearer(f"learner-{key}"), "Idempotency-Key": key})
        retried[response.status_code] += 1
    acknowledged = {key for key, _, status, _ in outcomes if status == 201}
    with service_on(database) as app:
        instances, tasks = aggregates(app)
        wait_for_projections(app, 60)
    client.close()
    users = Counter(instance.user_id for instance in instances.values())
    statuses = Counter(status for _, _, status, _ in outcomes)
    during = [(s, r) for _, t, s, r in outcomes if down_at < t < up_at]
    record("dependencies", fault="PostgreSQL stopped (immediate) for 3 s under load, then started",
           requests=len(outcomes), statuses={str(k): v for k, v in statuses.items()},
           sent_while_down=len(during), answered_503_with_retry_after=sum(1 for _, _, s, r in outcomes if s == 503 and r),
           seconds_to_first_success_after_restart=round(recovered - up_at, 2),
           retried_after_recovery=sum(retried.values()), retry_statuses={str(k): v for k, v in retried.items()},
           acknowledged=len(acknowledged) + retried[201], duplicated_instances=sum(1 for n in users.values() if n > 1),
           instances=len(instances), server_restarts_needed=serve.starts - 1)
    assert ready_while_down.status_code == 503 and ready_while_down.headers.get("retry-after")
    assert statuses[500] == 0, statuses
    # Sent while it was down: answered 503 (or held until it was back, then 201); never 500.
    assert statuses[503] > 0 and set(s for s, _ in during) <= {503, 201}, during
    assert all(r for _, _, s, r in outcomes if s == 503), "a 503 without Retry-After"
    assert set(retried) == {201}, retried
    assert {f"learner-{key}" for key in acknowledged} <= set(users)
    assert len(instances) == len(users) == len(acknowledged) + retried[201]
    assert not unexplained_tasks(instances, tasks)
    assert serve.process.poll() is None and serve.starts == 1


TOPIC = "skillbase.workflow.outage"


def test_kafka_down_commands_go_on_and_the_relay_catches_up(schema_database, tmp_path, children, kafka_broker,
                                                             record) -> None:
    port = free_port()
    env = service_env(schema_database, tmp_path, port,
                      SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
                      SKILLBASE_WORKFLOW_KAFKA_ENABLE_IDEMPOTENCE="false",
                      SKILLBASE_WORKFLOW_KAFKA_OUTPUT_TOPIC=TOPIC,
                      SKILLBASE_WORKFLOW_KAFKA_CATALOG_TOPICS=f"{TOPIC}.catalog",
                      SKILLBASE_WORKFLOW_KAFKA_CONSUMER_GROUP=f"outage-{schema_database.schema}")
    serve = children(["serve"], env, port).start()
    with httpx.Client(base_url=serve.url, timeout=30) as client, service_on(schema_database) as app:
        deploy_quick(client)
        for n in range(5):
            journey(client, n)
        head = app.recorder.max_notification_id()
        wait_until(lambda: relay_position(app, TOPIC) >= head, 30, 0.1, "relay caught up before the outage")
        before = relay_position(app, TOPIC)
        kafka_broker.stop()
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: journey(client, n), range(5, 45)))
            during = time.monotonic() - started
            time.sleep(1)  # the relay retries meanwhile
            stuck_at = relay_position(app, TOPIC)
        finally:
            kafka_broker.start()
        head = app.recorder.max_notification_id()
        caught_up = wait_until(lambda: relay_position(app, TOPIC) >= head and time.monotonic(), 90, 0.2,
                               "relay caught up after the outage")
        expected = expected_cloudevent_ids(app, after=before)
        seen = published_ids(kafka_broker.bootstrap_servers, TOPIC, set(expected))
    missing = set(expected) - seen.keys()
    record("dependencies", fault="Kafka broker stopped while 40 learners started and completed, then started",
           commands_during_outage=80, commands_acknowledged_during_outage=80,
           seconds_of_commands_during_outage=round(during, 2), relay_position_during_outage=stuck_at,
           events_stored_during_and_after=len(expected), kafka_events_missing=len(missing),
           kafka_events_resent=sum(n - 1 for n in seen.values() if n > 1),
           seconds_to_catch_up_after_broker_back=round(caught_up - started - during, 2))
    assert stuck_at == before, "the relay moved its position while the broker was down"
    assert not missing, f"{len(missing)} events never published after the outage"


def upload(client: httpx.Client, instance: str, headers: dict[str, str], body: bytes, name: str) -> httpx.Response:
    return client.post(f"/instances/{instance}/files", content=body, headers={
        **headers, "Content-Type": "text/plain", "Content-Disposition": f'attachment; filename="{name}"'})


def test_juicefs_mount_gone_uploads_fail_cleanly(schema_database, tmp_path, children, juicefs_volume,
                                                  record) -> None:
    port = free_port()
    env = service_env(schema_database, tmp_path, port, SKILLBASE_WORKFLOW_FILES_ROOT=str(juicefs_volume.mountpoint))
    serve = children(["serve"], env, port).start()
    learner = bearer("learner-jo")
    statuses: dict[str, list[int]] = {}
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        deploy_quick(client)
        instance = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=learner).json()["id"]

        def attempt(phase: str, n: int) -> list[httpx.Response]:
            responses = [upload(client, instance, learner, f"{phase} {i}\n".encode() * 1000, f"{phase}-{i}.txt")
                         for i in range(n)]
            statuses[phase] = [r.status_code for r in responses]
            return responses

        attempt("mounted", 3)
        juicefs_volume.kill()  # the FUSE daemon dies: ENOTCONN under the mount point
        dead = attempt("daemon killed", 3)
        juicefs_volume.unmount()  # now an empty local directory, not a mount
        unmounted = attempt("unmounted", 3)
        juicefs_volume.mount()
        attempt("mounted again", 3)
        listed = client.get(f"/instances/{instance}/files", headers=learner)
    with service_on(schema_database) as app:
        attached = app.get_instance(UUID(instance)).files
    directory = juicefs_volume.mountpoint / "skillbase" / "workflow"
    visible = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()
               if not p.name.startswith(".")}
    expected = {f"{file_id}.{file['extension']}" if "extension" in file else None: file.get("sha256")
                for file_id, file in attached.items()}
    hidden = [p.name for p in directory.iterdir() if p.name.startswith(".")]
    record("dependencies", fault="JuiceFS: FUSE daemon killed, then unmounted, then mounted again",
           uploads=sum(len(v) for v in statuses.values()), statuses_by_phase=statuses,
           files_attached=len(attached), visible_files=len(visible),
           visible_files_not_attached=len(set(visible) - set(expected)), hidden_partials_left=len(hidden),
           service_restarts_needed=serve.starts - 1)
    assert statuses["mounted"] == statuses["mounted again"] == [201] * 3
    assert statuses["daemon killed"] == statuses["unmounted"] == [503] * 3, statuses
    assert all(r.headers.get("retry-after") for r in dead + unmounted)
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in dead + unmounted)
    assert len(attached) == 6 and len(listed.json()["items"]) == 6
    assert visible == expected, (visible, expected)
    assert not list(juicefs_volume.mountpoint.parent.glob("mnt/skillbase/workflow/*.part"))


MAIL_BPMN = QUICK_BPMN.replace(
    '<bpmn:sequenceFlow id="f2" sourceRef="confirm" targetRef="review" />',
    '<bpmn:sequenceFlow id="f2" sourceRef="confirm" targetRef="mail" />'
    '<bpmn:sequenceFlow id="f2b" sourceRef="mail" targetRef="review" />',
).replace(
    '<bpmn:manualTask id="review"',
    '<bpmn:sendTask id="mail" name="Email learner" messageRef="msg_email"><bpmn:extensionElements>'
    "<spiffworkflow:messagePayload>{'template': 'credential_passed', 'to': 'learner'}</spiffworkflow:messagePayload>"
    '</bpmn:extensionElements><bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f2b</bpmn:outgoing></bpmn:sendTask>'
    '<bpmn:manualTask id="review"',
).replace('<bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>\n    </bpmn:manualTask>',
          '<bpmn:incoming>f2b</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>\n    </bpmn:manualTask>').replace(
    '<bpmn:process id="quick"', '<bpmn:message id="msg_email" name="email" />\n  <bpmn:process id="quick"').replace(
    '<bpmn:flowNodeRef>review</bpmn:flowNodeRef>', '<bpmn:flowNodeRef>mail</bpmn:flowNodeRef>'
    '<bpmn:flowNodeRef>review</bpmn:flowNodeRef>')


def test_smtp_down_emails_go_out_later_once(schema_database, tmp_path, children, smtp_server, record) -> None:
    port = free_port()
    env = service_env(schema_database, tmp_path, port, SKILLBASE_WORKFLOW_SMTP_HOST=smtp_server.host,
                      SKILLBASE_WORKFLOW_SMTP_PORT=str(smtp_server.port))
    serve = children(["serve"], env, port).start()
    mailer = children(["mail", "run"], env).start()
    smtp_server.stop()
    learners = 20
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        uploaded = client.post(f"/definitions/{CREDENTIAL}/versions", headers=ADMIN,
                               json={"files": {"quick.bpmn": MAIL_BPMN, "confirm.schema.json": QUICK_FORM}})
        assert uploaded.status_code == 201, uploaded.text
        number = uploaded.json()["number"]
        assert client.post(f"/definitions/{CREDENTIAL}/versions/{number}/deploy", headers=ADMIN).status_code == 200
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: journey(client, n, "mailed", email=f"mailed-{n:03d}@example.org"),
                          range(learners)))
    time.sleep(3)  # the worker tries and fails meanwhile
    delivered_while_down = len(smtp_server.messages)
    mailer.kill()  # and dies once while the server is down
    mailer.start()
    smtp_server.start()
    back = time.monotonic()
    # mail retries wait 30 s, then 60 s (ADR 0007): two failed attempts while it was down fit
    smtp_server.wait_for(learners, timeout=150)
    seconds = time.monotonic() - back
    time.sleep(2)  # nothing more arrives
    recipients = Counter(address for message in smtp_server.messages for address in message.rcpt_tos)
    ids = Counter(message.message["Message-ID"] for message in smtp_server.messages)
    record("dependencies", fault="SMTP server down while 20 emails fell due; a second mail worker (mail run, next to serve's) killed once meanwhile",
           emails_due=learners, delivered_while_down=delivered_while_down, delivered=len(smtp_server.messages),
           duplicates=sum(n - 1 for n in recipients.values()), seconds_to_deliver_after_smtp_back=round(seconds, 2))
    assert delivered_while_down == 0
    assert len(smtp_server.messages) == learners
    assert set(recipients) == {f"mailed-{n:03d}@example.org" for n in range(learners)}
    assert set(recipients.values()) == {1} and set(ids.values()) == {1}
