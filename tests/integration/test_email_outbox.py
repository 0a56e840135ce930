"""Emails of the example process reach a real SMTP server (aiosmtpd): exactly the right
ones, to the right people, once each — also when the server was down meanwhile, when the
worker crashed after sending, and when an admin retries a failed email."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
import pytest

from application.bootstrap import bootstrap, open_file_store
from application.contract import event_id
from application.mail import MAX_ATTEMPTS, message_id_for
from application.mail_worker import MailWorker
from application.service import WorkflowService
from domain.errors import NotAllowed
from domain.identity import Actor
from interface.examples import load_example_catalog
from tests.fixtures.clock import ManualClock

pytestmark = pytest.mark.integration

LIN = Actor.of("learner-lin", email="lin@example.org")
ADA = Actor.of("assessor-ada", "Assessor")
ADMIN = Actor.of("root", "admin")
ASSESSORS = "assessors@example.org"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def mail_settings(settings, smtp_server):
    return msgspec.structs.replace(
        settings, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
        group_addresses=(f"Assessor={ASSESSORS}",),
    )


@pytest.fixture
def service(mail_settings, schema_database, clock):
    app = bootstrap(mail_settings, database=schema_database, clock=clock)
    yield app
    app.close()


@pytest.fixture
def worker(service, mail_settings):
    found = MailWorker(service, mail_settings)
    yield found
    found.release()


def run_process(app: WorkflowService, settings: Any, score: int, learner: Actor = LIN) -> UUID:
    credential_id = _example_credential(app)
    instance_id = app.start_instance(learner, credential_id)
    stored = open_file_store(settings).write([b"weld notes\n"], "text/plain")
    app.attach_file(learner, instance_id, file_id=stored.file_id, extension=stored.extension,
                    media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="notes.txt")
    (submit,) = app.get_instance(instance_id).open_tasks
    app.complete_task(learner, submit, {"statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.", "evidence_files": [str(stored.file_id)]})
    (assess,) = app.get_instance(instance_id).open_tasks
    app.claim_task(ADA, assess)
    app.complete_task(ADA, assess, {"score": score, "feedback": "Seen."})
    (observe,) = app.get_instance(instance_id).open_tasks
    app.claim_task(ADA, observe)
    app.complete_task(ADA, observe, {})
    return instance_id


def _example_credential(app: WorkflowService) -> str:
    """The example credential, loaded on first use (a second process reuses it)."""
    if not hasattr(app, "_example_credential_id"):
        app._example_credential_id = load_example_catalog(app)[1]
    return app._example_credential_id


def email_events(app: WorkflowService, instance_id: UUID) -> list[tuple[str, int]]:
    """(Message-ID expected, version) for every email message the instance recorded."""
    found = []
    for notification in app.recorder.select_notifications(start=1, limit=10_000):
        event = app.mapper.to_domain_event(notification)
        if event.originator_id == instance_id:
            for index, message in enumerate(getattr(event, "messages", [])):
                if message["name"] == "email":
                    found.append(message_id_for(UUID(event_id(instance_id, event.originator_version)), index))
    return found


def text(received) -> str:
    return received.message.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("score", "template", "subject"),
    [(85, "credential_passed", "You passed"), (40, "credential_failed", "Your assessment for")],
)
def test_the_example_process_sends_exactly_its_emails(service, mail_settings, worker, smtp_server,
                                                      score, template, subject):
    instance_id = run_process(service, mail_settings, score)

    assert worker.run_once() == 2
    assert worker.run_once() == 0

    first, second = smtp_server.wait_for(2)
    assert len(smtp_server.messages) == 2
    assert first.rcpt_tos == (ASSESSORS,)
    assert first.message["Subject"].startswith("Evidence submitted for")
    assert "lin@example.org" in text(first) and f"/instances/{instance_id}" in text(first)
    assert second.rcpt_tos == ("lin@example.org",)
    assert second.message["Subject"].startswith(subject)
    assert f"/instances/{instance_id}" in text(second)
    assert [first.message["Message-ID"], second.message["Message-ID"]] == email_events(service, instance_id)
    instance = service.get_instance(instance_id)
    assert len(instance.emails_sent) == 2
    assert {row["status"] for row in worker.rows()} == {"sent"}


def test_smtp_down_while_the_process_runs_emails_arrive_once_it_is_back(service, mail_settings, worker,
                                                                       smtp_server, clock):
    smtp_server.stop()
    instance_id = run_process(service, mail_settings, 85)

    assert worker.run_once() == 0
    assert sorted(row["attempts"] for row in worker.rows()) == [0, 1]  # no server: the round ends there
    clock.advance(seconds=1)
    worker.run_once()  # the other one's turn: nothing arrives, nothing is lost
    assert {row["attempts"] for row in worker.rows()} == {1}

    smtp_server.start()
    clock.advance(minutes=10)
    assert worker.run_once() == 2
    clock.advance(minutes=10)
    assert worker.run_once() == 0

    received = smtp_server.wait_for(2)
    assert len(smtp_server.messages) == 2
    assert sorted(r.message["Message-ID"] for r in received) == sorted(email_events(service, instance_id))


def test_a_new_worker_after_a_crash_between_smtp_and_recording_resends_with_the_same_message_id(
        service, mail_settings, smtp_server):
    instance_id = run_process(service, mail_settings, 85)
    crashing = MailWorker(service, mail_settings)
    crashing.service = _Crashing(service)
    with pytest.raises(_ProcessDied):
        crashing.run_once()
    crashing._lock_connection.close()  # the process died: its session and lock are gone, its claim stays

    fresh = bootstrap(mail_settings, database=_database(service), clock=service.clock)
    try:
        restarted = MailWorker(fresh, mail_settings)
        assert restarted.run_once() == 1  # the email the dead worker held waits for its claim's lease
        _lease_lapses(service)
        assert restarted.run_once() == 1
        restarted.release()
    finally:
        fresh.close()

    ids = [r.message["Message-ID"] for r in smtp_server.wait_for(3)]
    assert ids[0] == ids[2]  # the duplicate carries the same id: receivers drop it
    assert sorted(set(ids)) == sorted(email_events(service, instance_id))
    assert len(service.get_instance(instance_id).emails_sent) == 2


def test_a_failed_email_becomes_an_incident_that_an_admin_retries(service, mail_settings, worker,
                                                                 smtp_server, clock):
    smtp_server.reject(ASSESSORS, "550 5.1.1 No such mailbox")
    instance_id = run_process(service, mail_settings, 85)

    assert worker.run_once() == 1  # the learner's email goes; the assessors' is refused for good
    instance = service.get_instance(instance_id)
    (incident,) = instance.open_incidents
    assert incident["kind"] == "email" and "550" in incident["reason"]
    assert ASSESSORS not in incident["reason"]  # incidents are published: no addresses
    assert incident["subject"]["template"] == "evidence_submitted"
    with pytest.raises(NotAllowed):
        service.retry_incident(LIN, instance_id, incident["id"])

    smtp_server._handler.refusals.clear()
    service.retry_incident(ADMIN, instance_id, incident["id"])
    assert worker.run_once() == 1
    assert worker.run_once() == 0
    assert service.get_instance(instance_id).open_incidents == []
    assert [r.rcpt_tos for r in smtp_server.wait_for(2)] == [("lin@example.org",), (ASSESSORS,)]


def test_temporary_failures_end_in_an_incident_after_the_last_attempt(service, mail_settings, worker,
                                                                     smtp_server, clock):
    smtp_server.stop()
    instance_id = run_process(service, mail_settings, 85)
    for _ in range(2 * MAX_ATTEMPTS):  # no server: each round tries one email, then ends
        worker.run_once()
        clock.advance(hours=1)

    incidents = service.get_instance(instance_id).open_incidents
    assert len(incidents) == 2 and {i["attempts"] for i in incidents} == {MAX_ATTEMPTS}
    assert {row["status"] for row in worker.rows()} == {"incident"}


def test_one_worker_sends_at_a_time(service, mail_settings, worker, smtp_server):
    run_process(service, mail_settings, 85)
    standby = MailWorker(service, mail_settings)
    try:
        assert worker.acquire()
        assert standby.run_once() == 0
        worker.release()
        assert standby.run_once() == 2
    finally:
        standby.release()
    assert len(smtp_server.wait_for(2)) == 2


def test_a_worker_whose_lock_session_ended_stops_sending_and_the_standby_takes_over(
        service, mail_settings, worker, smtp_server):
    """The lock lives in the worker's own session. When the server ends that session (a
    restart, an idle-session kill, a failover), the lock is free for a standby at once; the
    old worker must notice at its next round instead of sending alongside the new one."""
    standby = MailWorker(service, mail_settings)
    try:
        assert worker.acquire()
        assert not standby.acquire()
        pid = worker._lock_connection.info.backend_pid
        with service.recorder.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert standby.acquire()
        run_process(service, mail_settings, 85)
        assert worker.run_once() == 0  # no longer the active worker
        assert standby.run_once() == 2
    finally:
        standby.release()
    assert len(smtp_server.wait_for(2)) == 2


def test_without_smtp_emails_wait_in_the_outbox(service, settings, smtp_server):
    run_process(service, settings, 85)
    quiet = MailWorker(service, settings)
    try:
        assert quiet.run_once() == 0
    finally:
        quiet.release()
    assert {row["status"] for row in quiet.rows()} == {"pending"}
    assert smtp_server.messages == []


class _ProcessDied(BaseException):
    """Stands for the process ending: no handler of the worker runs (it would not, killed)."""


class _Crashing:
    """The service as the worker sees it, dying right after the SMTP server said 250."""

    def __init__(self, service: WorkflowService) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def record_email_sent(self, *args: Any, **kwargs: Any) -> bool:
        raise _ProcessDied("killed after SMTP accepted the email")


def _lease_lapses(service: WorkflowService) -> None:
    """Every email's claim ends, as it does ``CLAIM_LEASE`` after its worker died."""
    datastore = service.recorder.datastore
    with datastore.transaction(commit=True) as curs:
        curs.execute(f'UPDATE "{datastore.schema}".workflow_email_outbox SET claimed_until = now() - interval \'1 second\' '
                     "WHERE claimed_until IS NOT NULL")


def _database(service: WorkflowService):
    from application.database import Database

    datastore = service.recorder.datastore
    kwargs = datastore.pool.kwargs
    return Database(host=kwargs["host"], port=int(kwargs["port"]), name=kwargs["dbname"], user=kwargs["user"],
                    password=kwargs["password"], schema=datastore.schema)


def test_a_task_reminder_email_reaches_the_learner_before_the_due_date(service, mail_settings, worker,
                                                                       smtp_server, clock):
    from pathlib import Path

    from application.timers.scheduler import Scheduler

    _skill, credential_id = load_example_catalog(service)
    bpmn = Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "paid-credential.bpmn"
    number = service.upload_definition_version(ADMIN, credential_id, {"paid-credential.bpmn": bpmn.read_bytes()})
    service.deploy_definition_version(ADMIN, credential_id, number)
    instance_id = service.start_instance(LIN, credential_id)

    clock.advance(hours=40)  # the task is due after 48 hours: remind 9.6 hours before
    Scheduler(service).run_once()
    assert worker.run_once() == 1

    (received,) = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("lin@example.org",)
    assert received.message["Subject"].startswith('Reminder: "Confirm your details"')
    assert f"/instances/{instance_id}" in text(received)


def test_a_server_that_never_answers_ends_the_round_after_one_email(service, mail_settings, worker, smtp_server):
    """Each email waited out the whole SMTP timeout (30 s) in turn: a round of fifty took
    25 minutes while none could go."""
    import socket

    for _ in range(2):
        run_process(service, mail_settings, 85)  # four emails due
    with socket.socket() as silent:  # accepts connections, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        worker.sender.host, worker.sender.port = silent.getsockname()
        worker.sender.timeout = 0.3
        assert worker.run_once() == 0
    attempts = sorted(row["attempts"] for row in worker.rows())
    assert attempts == [0, 0, 0, 1], attempts  # one tried, the others left for the next round
    worker.sender.host, worker.sender.port, worker.sender.timeout = smtp_server.host, smtp_server.port, 30.0
    assert worker.run_once() == 3  # the one that failed waits for its retry time


def test_a_stopping_worker_sends_no_further_email_and_gives_its_claims_up(service, mail_settings, worker,
                                                                          smtp_server):
    """A stop waited for the whole round (up to 50 emails); the app then closed the pool under
    it, so an accepted email could not be recorded and went again after its lease."""
    import threading

    for _ in range(2):
        run_process(service, mail_settings, 85)  # four emails due
    stop = threading.Event()
    real_send = worker.sender.send

    async def send_then_stop(email, date):
        await real_send(email, date)
        stop.set()  # the process is asked to stop while the first email goes

    worker.sender.send = send_then_stop
    worker.run_until(stop, poll_seconds=0.01)
    assert len(smtp_server.wait_for(1)) == 1
    rows = worker.rows()
    assert sorted(row["status"] for row in rows) == ["pending", "pending", "pending", "sent"]
    assert all(row["claimed_by"] is None for row in rows)


def test_an_email_whose_record_fails_after_smtp_accepted_it_is_not_sent_again(service, mail_settings, worker,
                                                                              smtp_server, clock, monkeypatch):
    """The round failed, gave the claim up, and the next round sent the email a second time."""
    from domain.errors import Conflict

    run_process(service, mail_settings, 85)  # two emails due
    real_record, failures = service.record_email_sent, []

    def busy_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise Conflict("someone else changed this at the same moment: reload and retry")
        return real_record(*args, **kwargs)

    monkeypatch.setattr(service, "record_email_sent", busy_once)
    worker.run_once()
    clock.advance(minutes=10)
    worker.run_once()
    received = smtp_server.wait_for(2)
    assert len(received) == len({r.message["Message-ID"] for r in received}) == 2
    assert {row["status"] for row in worker.rows()} == {"sent"}


def test_an_admin_sees_and_retries_an_incident_over_http(service, mail_settings, worker, smtp_server, schema_database):
    """The domain could retry an incident, but nothing outside a Python shell could."""
    from interface.http.testing import api_client, auth

    smtp_server.reject(ASSESSORS, "550 5.1.1 No such mailbox")
    instance_id = run_process(service, mail_settings, 85)
    assert worker.run_once() == 1
    admin, learner = auth(mail_settings, "admin-avi", ["admin"]), auth(mail_settings, LIN.user_id)
    with api_client(mail_settings, service, schema_database) as client:
        (incident,) = client.get(f"/instances/{instance_id}", headers=admin).json()["incidents"]
        path = f"/instances/{instance_id}/incidents/{incident['id']}/retry"
        refused = client.post(path, headers=learner)
        smtp_server._handler.refusals.clear()
        retried = client.post(path, headers=admin)
        again = client.post(path, headers=admin)
        unknown = client.post(f"/instances/{instance_id}/incidents/nope/retry", headers=admin)
        (after,) = client.get(f"/instances/{instance_id}", headers=admin).json()["incidents"]
    assert incident["kind"] == "email" and incident["status"] == "open" and "550" in incident["reason"]
    assert refused.status_code == 403
    assert retried.status_code == 200, retried.text
    assert again.status_code == 409  # no longer open
    assert unknown.status_code == 404
    assert after["status"] == "retried" and after["retried_by"] == "admin-avi"
    assert worker.run_once() == 1
    assert [r.rcpt_tos for r in smtp_server.wait_for(2)] == [("lin@example.org",), (ASSESSORS,)]
