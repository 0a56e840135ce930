"""Faults of the mail worker found in review, each reproduced against the real PostgreSQL and
SMTP server (every test here failed on the code before its fix; ADR 0007, amendment
"mail delivery faults"): a worker that lost its lock sending beside the new leader, one
unstorable payload stopping every email, addresses in incident reasons, a malformed address
delivered to another mailbox, a short SMTP outage turning emails into incidents, and a
reminder sent after its task was done."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from uuid import UUID

import psycopg
import pytest

from application.bootstrap import bootstrap
from application.mail_worker import MailWorker
from domain.identity import Actor
from interface.examples import load_example_catalog
from tests.integration.test_email_outbox import (  # noqa: F401 -- fixtures
    ADMIN,
    ASSESSORS,
    LIN,
    _database,
    _lease_lapses,
    clock,
    email_events,
    mail_settings,
    run_process,
    service,
    worker,
)

pytestmark = pytest.mark.integration


BOB = Actor.of("learner-bob", email="bob@example.org")


def service_logs(caplog) -> str:
    """What the service logged (the test SMTP server's own protocol log left out)."""
    return "\n".join(caplog.handler.format(record) for record in caplog.records if not record.name.startswith("mail.log"))


def learners(count: int) -> list[Actor]:
    return [Actor.of(f"learner-{n}", email=f"learner{n}@example.org") for n in range(count)]


# -- 1. one sender, also when a worker loses its lock in the middle of a round ------------------


def test_a_worker_that_lost_its_lock_during_a_round_does_not_send_its_batch_beside_the_new_leader(
        service, mail_settings, worker, smtp_server):
    for learner in learners(3):
        run_process(service, mail_settings, 85, learner=learner)  # 2 emails each
    worker.outbox.catch_up()
    expected = {row["message_id"] for row in worker.rows()}
    assert len(expected) == 6

    data_started = threading.Event()
    handle_data = smtp_server._handler.handle_DATA

    async def slow_data(server, session, envelope):
        data_started.set()
        await asyncio.sleep(0.3)
        return await handle_data(server, session, envelope)

    smtp_server._handler.handle_DATA = slow_data
    old = threading.Thread(target=worker.run_once)
    old.start()
    try:
        assert data_started.wait(10)
        with service.recorder.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_terminate_backend(%s)", (worker._lock_connection.info.backend_pid,))
        fresh = bootstrap(mail_settings, database=_database(service), clock=service.clock)
        try:
            leader = MailWorker(fresh, mail_settings)
            try:
                deadline = time.monotonic() + 10
                while not leader.acquire():  # the terminated backend lets go of the lock shortly
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                leader.run_once()
            finally:
                leader.release()
        finally:
            fresh.close()
    finally:
        old.join(30)
    assert not old.is_alive()

    received = Counter(r.message["Message-ID"] for r in smtp_server.messages)
    assert set(received) == expected  # nothing lost...
    # ...and nothing sent twice but, at most, the one email the old worker had in flight.
    assert sum(count - 1 for count in received.values()) <= 1


def test_an_email_another_worker_holds_is_left_to_it(service, mail_settings, worker, smtp_server):
    """Two workers that both believe they lead (a partition) still send each email once: each
    claims an email before sending it, and leaves one claimed by the other."""
    instance_id = run_process(service, mail_settings, 85)
    other = MailWorker(service, mail_settings)
    worker.outbox.catch_up()
    held = other._claim(worker.rows()[0])
    assert held is not None
    try:
        assert worker.run_once() == 1  # only the email nobody holds
        assert len(smtp_server.wait_for(1)) == 1
        assert other._deliver(held) == 1
    finally:
        other.release()
    assert sorted(r.message["Message-ID"] for r in smtp_server.wait_for(2)) == sorted(email_events(service, instance_id))


def test_an_email_whose_worker_died_after_claiming_it_is_sent_once_its_lease_lapses(
        service, mail_settings, worker, smtp_server):
    run_process(service, mail_settings, 85)
    dead = MailWorker(service, mail_settings)
    worker.outbox.catch_up()
    held = worker.rows()[0]
    assert dead._claim(held) is not None
    dead.release()  # the process died holding the claim

    assert worker.run_once() == 1  # the other email; the held one waits for the lease
    assert worker.run_once() == 0
    _lease_lapses(service)
    assert worker.run_once() == 1
    assert len(smtp_server.wait_for(2)) == 2


def test_a_worker_that_stops_gives_up_its_claims(service, mail_settings, worker, smtp_server):
    run_process(service, mail_settings, 85)
    stopping = MailWorker(service, mail_settings)
    assert stopping.acquire()
    stopping.outbox.catch_up()
    assert stopping._claim(stopping.rows()[0]) is not None
    stopping.release()  # a graceful stop (SIGTERM), unlike a crash

    assert worker.run_once() == 2
    assert len(smtp_server.wait_for(2)) == 2


OLD_OUTBOX = """CREATE TABLE {schema}.workflow_email_outbox (
    event_id uuid NOT NULL, idx int NOT NULL, instance_id uuid NOT NULL, originator_id uuid NOT NULL,
    originator_version int NOT NULL, message_id text NOT NULL, incident_id text NOT NULL, payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending', attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz,
    last_error text, PRIMARY KEY (event_id, idx))"""


@pytest.fixture
def outbox_of_an_older_release(schema_database) -> None:
    with psycopg.connect(schema_database.conninfo(), autocommit=True) as connection:
        connection.execute(OLD_OUTBOX.format(schema=f'"{schema_database.schema}"'))


def test_an_outbox_an_older_release_created_gets_the_claim_columns(
        outbox_of_an_older_release, service, mail_settings, worker, smtp_server):
    run_process(service, mail_settings, 85)
    assert worker.run_once() == 2
    assert len(smtp_server.wait_for(2)) == 2


# -- 2. a payload the outbox cannot store -----------------------------------------------------

NOTE_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="noted_definitions" targetNamespace="https://skillbase.example/workflow">
  <bpmn:message id="msg_email" name="email" />
  <bpmn:process id="noted" name="Noted" isExecutable="true">
    <bpmn:laneSet id="lanes">
      <bpmn:lane id="lane_learner" name="Learner">
        <bpmn:flowNodeRef>start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>write_note</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>email_learner</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>end</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="start"><bpmn:outgoing>to_note</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="write_note" name="Write a note">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="formJsonSchemaFilename" value="note.schema.json" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
      <bpmn:incoming>to_note</bpmn:incoming>
      <bpmn:outgoing>to_email</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:sendTask id="email_learner" name="Email the learner" messageRef="msg_email">
      <bpmn:extensionElements>
        <spiffworkflow:messagePayload>PAYLOAD</spiffworkflow:messagePayload>
      </bpmn:extensionElements>
      <bpmn:incoming>to_email</bpmn:incoming>
      <bpmn:outgoing>to_end</bpmn:outgoing>
    </bpmn:sendTask>
    <bpmn:endEvent id="end" name="Done">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="outcome" value="pass" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
      <bpmn:incoming>to_end</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="to_note" sourceRef="start" targetRef="write_note" />
    <bpmn:sequenceFlow id="to_email" sourceRef="write_note" targetRef="email_learner" />
    <bpmn:sequenceFlow id="to_end" sourceRef="email_learner" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>
"""
NOTE_SCHEMA = b"""{"type": "object", "required": ["note"], "additionalProperties": false,
 "properties": {"note": {"type": "string", "maxLength": 200}}}"""


def noted_credential(app, payload: str) -> str:
    """The example credential on a version whose email payload is computed from a learner's note."""
    _skill, credential_id = load_example_catalog(app)
    number = app.upload_definition_version(ADMIN, credential_id, {
        "noted.bpmn": NOTE_BPMN.replace("PAYLOAD", payload).encode(), "note.schema.json": NOTE_SCHEMA})
    app.deploy_definition_version(ADMIN, credential_id, number)
    return credential_id


def write_note(app, credential_id: str, learner: Actor, note: str) -> UUID:
    instance_id = app.start_instance(learner, credential_id)
    (task,) = app.get_instance(instance_id).open_tasks
    app.complete_task(learner, task, {"note": note})
    return instance_id


def test_a_nul_in_a_payload_field_no_template_uses_stops_no_email(service, worker, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    credential_id = noted_credential(service, "{'template': 'credential_passed', 'to': 'learner', 'note': note}")
    write_note(service, credential_id, LIN, "hello\x00world")
    write_note(service, credential_id, BOB, "hello")

    assert worker.run_once() == 2
    assert sorted(r.rcpt_tos for r in smtp_server.wait_for(2)) == [("bob@example.org",), ("lin@example.org",)]
    assert "hello" not in service_logs(caplog)


@pytest.mark.parametrize("bad_template", ["credential_passed\x00"])
def test_an_email_whose_payload_cannot_be_stored_is_one_incident_and_the_others_go(
        service, worker, smtp_server, caplog, bad_template):
    caplog.set_level(logging.DEBUG)
    credential_id = noted_credential(service, "{'template': note, 'to': 'learner'}")
    broken = write_note(service, credential_id, LIN, bad_template)
    fine = write_note(service, credential_id, BOB, "credential_passed")

    assert worker.run_once() == 1
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [("bob@example.org",)]
    (incident,) = service.get_instance(broken).open_incidents
    assert incident["kind"] == "email" and "could not be stored" in incident["reason"]
    assert service.get_instance(fine).open_incidents == []
    assert worker.run_once() == 0
    assert len(smtp_server.messages) == 1


def test_an_email_postgresql_still_refuses_is_one_incident_and_the_reader_goes_on(service, worker, smtp_server,
                                                                                monkeypatch, caplog):
    from application.outbox import email_outbox

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(email_outbox, "storable_payload", lambda payload: payload)  # keeps the note, NUL and all
    credential_id = noted_credential(service, "{'template': 'credential_passed', 'to': 'learner', 'note': note}")
    broken = write_note(service, credential_id, LIN, "hello\x00world")
    write_note(service, credential_id, BOB, "hello")

    assert worker.run_once() == 1
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [("bob@example.org",)]
    (incident,) = service.get_instance(broken).open_incidents
    assert "could not be stored" in incident["reason"]
    assert "cannot be stored (UntranslatableCharacter)" in service_logs(caplog)
    assert "hello" not in service_logs(caplog)


def test_a_failed_round_logs_the_error_type_never_its_text(service, mail_settings, caplog):
    """PostgreSQL's error texts quote the values they refused (learner data)."""
    stop = threading.Event()
    failing = MailWorker(service, mail_settings)

    learner_data = '{"note": "secret note'

    def round_that_fails(_stop: object = None) -> int:
        stop.set()
        raise psycopg.errors.DataError(f"invalid input syntax for type json\nCONTEXT:  JSON data, line 1: {learner_data}")

    failing.run_once = round_that_fails
    with caplog.at_level(logging.DEBUG):
        failing.run_until(stop, poll_seconds=0)
    assert "DataError" in service_logs(caplog) and "secret" not in service_logs(caplog)


# -- 3. incident reasons keep no address --------------------------------------------------------


@pytest.mark.parametrize("reply", ["550 5.1.1 No such mailbox", "550 5.1.1 <{address}>: No such mailbox"])
@pytest.mark.parametrize("address", ["jean.o'neil@example.org", '"jean.smith"@example.org'])
def test_an_incident_reason_never_holds_the_refused_address(service, mail_settings, worker, smtp_server, caplog,
                                                            address, reply):
    caplog.set_level(logging.DEBUG)
    for form in {address, address.replace('"', "")}:  # the server reads "jean.smith" as jean.smith
        smtp_server.reject(form, reply.format(address=address))
    instance_id = run_process(service, mail_settings, 85, learner=Actor.of("learner-jean", email=address))

    assert worker.run_once() == 1  # the assessors' email
    (incident,) = service.get_instance(instance_id).open_incidents
    assert "550" in incident["reason"]
    assert "jean" not in incident["reason"].casefold()
    assert "jean" not in service_logs(caplog).casefold()
    assert all("jean" not in (row["last_error"] or "") for row in worker.rows())


# -- 4. an address that is not exactly one address --------------------------------------------


@pytest.mark.parametrize("address", ["lin@exa mple.org", "evil@x.org, bob", "lin@example.org (bcc: x)",
                                     "lin@example.org>", "Lin <lin@example.org"])
def test_an_address_that_does_not_read_back_as_itself_is_an_incident_not_another_mailbox(
        service, mail_settings, worker, smtp_server, address):
    instance_id = run_process(service, mail_settings, 85, learner=Actor.of("learner-lin", email=address))

    assert worker.run_once() == 1  # the assessors' email only
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [(ASSESSORS,)]
    evidence_text = smtp_server.messages[0].message.get_body(("plain",)).get_content()
    assert "lin@example.org" not in evidence_text and "evil@x.org" not in evidence_text
    (incident,) = service.get_instance(instance_id).open_incidents
    assert "the learner's email address is refused" in incident["reason"]


# -- 5. an SMTP outage of half an hour --------------------------------------------------------


def test_half_an_hour_of_smtp_downtime_raises_no_incident_and_the_emails_go_when_it_is_back(
        service, mail_settings, worker, smtp_server, clock):
    smtp_server.stop()
    instance_id = run_process(service, mail_settings, 85)
    for _ in range(30):  # polled every minute for 30 minutes
        assert worker.run_once() == 0
        clock.advance(minutes=1)
    assert service.get_instance(instance_id).open_incidents == []
    assert {row["status"] for row in worker.rows()} == {"pending"}

    smtp_server.start()
    clock.advance(hours=1)  # the longest wait between two attempts
    assert worker.run_once() == 2
    assert len(smtp_server.wait_for(2)) == 2


# -- 6. a reminder for a task that is done ------------------------------------------------------


@pytest.mark.parametrize("settle", ["complete the task", "cancel the instance"])
def test_a_reminder_is_not_sent_after_its_task_was_settled(service, mail_settings, worker, smtp_server, clock,
                                                          settle):
    from pathlib import Path

    from application.timers.scheduler import Scheduler

    _skill, credential_id = load_example_catalog(service)
    bpmn = Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "paid-credential.bpmn"
    number = service.upload_definition_version(ADMIN, credential_id, {"paid-credential.bpmn": bpmn.read_bytes()})
    service.deploy_definition_version(ADMIN, credential_id, number)
    instance_id = service.start_instance(LIN, credential_id)

    clock.advance(hours=40)
    Scheduler(service).run_once()
    smtp_server.stop()
    assert worker.run_once() == 0  # the reminder could not go yet
    (task,) = service.get_instance(instance_id).open_tasks
    if settle == "complete the task":
        service.complete_task(LIN, task, {})
    else:
        service.cancel_instance(LIN, instance_id, "changed my mind")
    smtp_server.start()
    clock.advance(minutes=10)

    assert worker.run_once() == 0
    time.sleep(0.2)
    assert smtp_server.messages == []
    assert {row["status"] for row in worker.rows()} == {"dropped"}
    assert service.get_instance(instance_id).open_incidents == []


# -- what the worker counts, and an incident that cannot be recorded ---------------------------


class _Seen:
    """The service as a worker sees it, with one command changed."""

    def __init__(self, service) -> None:
        self._service = service

    def __getattr__(self, name: str):
        return getattr(self._service, name)


class _Recorded(_Seen):
    """...when another worker recorded the email first."""

    def record_email_sent(self, *args, **kwargs) -> bool:
        self._service.record_email_sent(*args, **kwargs)
        return False


def test_an_email_someone_else_recorded_is_not_counted_as_sent(service, mail_settings, smtp_server):
    run_process(service, mail_settings, 85)
    late = MailWorker(service, mail_settings)
    late.service = _Recorded(service)
    try:
        assert late.run_once() == 0
    finally:
        late.release()


class _NoIncidents(_Seen):
    """...when the instance cannot record an incident (a bug, an instance that does not load)."""

    def raise_incident(self, *args, **kwargs) -> bool:
        raise RuntimeError("the instance cannot be saved")


def test_an_incident_that_cannot_be_recorded_leaves_the_email_to_be_tried_again(
        service, mail_settings, worker, smtp_server, clock):
    smtp_server.reject(ASSESSORS, "550 5.1.1 No such mailbox")
    instance_id = run_process(service, mail_settings, 85)
    worker.service = _NoIncidents(service)
    worker.run_once()
    (row,) = [row for row in worker.rows() if row["status"] != "sent"]
    assert row["status"] == "pending" and row["next_attempt_at"] > clock()

    worker.service = service
    clock.advance(hours=2)
    worker.run_once()
    (incident,) = service.get_instance(instance_id).open_incidents
    assert incident["kind"] == "email"
    assert {row["status"] for row in worker.rows()} == {"sent", "incident"}


# -- 7. internationalised addresses -------------------------------------------------------------


def test_an_address_with_a_non_ascii_domain_is_sent_to_its_ascii_form(service, mail_settings, worker, smtp_server):
    # The test server, like many, does not offer SMTPUTF8; a domain has an ASCII form (IDNA).
    instance_id = run_process(service, mail_settings, 85, learner=Actor.of("learner-lin", email="lin@bücher.example"))

    assert worker.run_once() == 2
    assert sorted(r.rcpt_tos for r in smtp_server.wait_for(2)) == sorted([(ASSESSORS,), ("lin@xn--bcher-kva.example",)])
    assert service.get_instance(instance_id).open_incidents == []


def test_a_non_ascii_local_part_a_server_without_smtputf8_cannot_take_is_an_incident_at_once(
        service, mail_settings, worker, smtp_server):
    instance_id = run_process(service, mail_settings, 85, learner=Actor.of("learner-jorg", email="jörg@example.org"))

    assert worker.run_once() == 1  # the assessors' email
    (incident,) = service.get_instance(instance_id).open_incidents
    assert "SMTPUTF8" in incident["reason"]
    assert "jörg" not in incident["reason"]
    assert [row["status"] for row in worker.rows() if row["status"] == "pending"] == []


def test_a_non_ascii_local_part_goes_to_a_server_that_offers_smtputf8(service, mail_settings, worker, smtp_server):
    smtp_server.stop()
    smtp_server.smtputf8 = True
    smtp_server.start()
    run_process(service, mail_settings, 85, learner=Actor.of("learner-jorg", email="jörg@bücher.example"))

    assert worker.run_once() == 2
    assert sorted(r.rcpt_tos for r in smtp_server.wait_for(2)) == sorted([(ASSESSORS,), ("jörg@xn--bcher-kva.example",)])


# -- 8. one email outlasting its claim ------------------------------------------------------------


def test_a_worker_refuses_a_claim_lease_that_one_email_could_outlast(service, mail_settings):
    from datetime import timedelta

    from application.mail import SmtpSender

    slow = SmtpSender("127.0.0.1", 25, total_timeout=300.0)
    with pytest.raises(ValueError, match="claim lease"):
        MailWorker(service, mail_settings, sender=slow, claim_lease=timedelta(minutes=5))
    assert MailWorker(service, mail_settings, sender=slow, claim_lease=timedelta(minutes=6)).claim_lease
