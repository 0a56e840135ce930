"""Kept messages under faults and races: one message that raises does not hold up the
others, and a message sent by correlation keys reaches one instance however many
deliverers (the sender's request, schedulers on other replicas) reach for it at once,
even when one of them dies half way."""

from __future__ import annotations

import logging
import threading
from uuid import UUID

import psycopg
import pytest

from application.bootstrap import bootstrap
from application.service import WorkflowService
from application.timers.scheduler import Scheduler
from domain.instance import COMPLETED, RUNNING
# The message tests' fixtures and helpers, shared rather than copied.
from tests.integration.test_messages import (  # noqa: F401 - fixtures
    ADMIN, LIN, PAYMENT, SAM, both_waiting_for_payment, clock, confirm, credential_id, message_steps, service,
)

pytestmark = pytest.mark.integration


class ProcessDied(BaseException):
    """Stands for the process ending mid-command: no handler of the code under test runs."""


@pytest.fixture
def replica(settings, schema_database, clock):
    """A second process of the service on the same database: another replica's scheduler."""
    app = bootstrap(settings, database=schema_database, clock=clock)
    yield app
    app.close()


def takers(app: WorkflowService, message_id: str, *instance_ids: UUID) -> list[UUID]:
    """The instances that recorded a step caused by ``message_id``, once per step."""
    return [i for i in instance_ids for cause in message_steps(app, i) if cause == message_id]


def to_everyone(credential: str) -> dict[str, str]:
    """Correlation keys that both Lin's and Sam's instances match."""
    return {"credential_id": credential}


def test_a_kept_message_that_raises_is_backed_off_and_the_later_ones_are_delivered(
        service, credential_id, clock, caplog, monkeypatch):
    lins = service.start_instance(LIN, credential_id)
    sams = service.start_instance(SAM, credential_id)
    assert service.deliver_message(ADMIN, PAYMENT, {"card": "secret-4111"}, "pay-lin", instance_id=lins) == "kept"
    clock.advance(seconds=1)
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 5}, "pay-sam", instance_id=sams) == "kept"
    for learner, instance_id in ((LIN, lins), (SAM, sams)):
        confirm(service, learner, instance_id)
    real_deliver, calls = service.engine.deliver_message, []

    def deliver_message(ref, state, engine_format, name, payload, correlations, *, now):
        if "card" in payload:
            calls.append(name)
            raise KeyError(f"card {payload['card']} unreadable")
        return real_deliver(ref, state, engine_format, name, payload, correlations, now=now)

    monkeypatch.setattr(service.engine, "deliver_message", deliver_message)
    scheduler = Scheduler(service)
    with caplog.at_level(logging.INFO):
        scheduler.run_once()
        assert service.get_instance(sams).status == COMPLETED  # in the same round as the failure
        assert service.get_instance(lins).status == RUNNING
        scheduler.run_once()
        scheduler.run_once()
    assert len(calls) == 1  # backed off: no spinning on the broken message
    assert "pay-lin" in caplog.text and "KeyError" in caplog.text
    assert "secret-4111" not in caplog.text
    assert service.message_status("pay-lin")["status"] == "pending"

    monkeypatch.setattr(service.engine, "deliver_message", real_deliver)
    clock.advance(hours=2)
    scheduler.run_once()
    assert service.get_instance(lins).status == COMPLETED
    assert service.message_status("pay-lin")["status"] == "delivered"


def test_losing_the_database_while_delivering_a_kept_message_ends_the_round_and_loses_nothing(
        service, credential_id, clock, monkeypatch):
    instance_id = service.start_instance(LIN, credential_id)
    service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-1", instance_id=instance_id)
    confirm(service, LIN, instance_id)
    real_deliver = service.engine.deliver_message

    def deliver_message(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(service.engine, "deliver_message", deliver_message)
    scheduler = Scheduler(service)
    with pytest.raises(psycopg.OperationalError):
        scheduler.run_once()

    monkeypatch.setattr(service.engine, "deliver_message", real_deliver)
    clock.advance(hours=1)  # long after the dead round's claim lapsed
    scheduler.run_once()
    assert service.get_instance(instance_id).status == COMPLETED
    assert message_steps(service, instance_id) == ["pay-1"]


def test_a_message_by_correlation_keys_reaches_another_waiting_instance_when_the_first_raises(
        service, credential_id, caplog, monkeypatch):
    lins, sams = both_waiting_for_payment(service, credential_id)
    real_deliver, calls = service.engine.deliver_message, []

    def deliver_message(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("the first instance is broken")
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(service.engine, "deliver_message", deliver_message)
    with caplog.at_level(logging.INFO):
        outcome = service.deliver_message(ADMIN, PAYMENT, {"amount": 5}, "pay-all",
                                          correlation_keys=to_everyone(credential_id))

    assert outcome == "delivered"
    (taker,) = takers(service, "pay-all", lins, sams)
    assert service.message_status("pay-all")["delivered_to"] == taker
    assert "pay-all" in caplog.text and "KeyError" in caplog.text


def test_a_scheduler_round_during_direct_delivery_does_not_deliver_the_message_a_second_time(
        service, replica, credential_id, monkeypatch):
    lins, sams = both_waiting_for_payment(service, credential_id)
    real_waiting = service._waiting_instances

    def waiting_instances(name, correlation_keys):
        # The row is stored; before this request looks for takers, another replica's round runs.
        Scheduler(replica).run_once()
        return real_waiting(name, correlation_keys)

    monkeypatch.setattr(service, "_waiting_instances", waiting_instances)
    outcome = service.deliver_message(ADMIN, PAYMENT, {"amount": 5}, "pay-all",
                                      correlation_keys=to_everyone(credential_id))

    assert outcome == "delivered"
    (taker,) = takers(service, "pay-all", lins, sams)
    assert {service.get_instance(i).status for i in (lins, sams)} == {COMPLETED, RUNNING}
    assert service.message_status("pay-all")["delivered_to"] == taker


def kept_for_both(service: WorkflowService, credential: str) -> tuple[UUID, UUID]:
    """A message by correlation keys kept before anyone waited; then Lin and Sam both wait."""
    lins = service.start_instance(LIN, credential)
    sams = service.start_instance(SAM, credential)
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 5}, "pay-all",
                                   correlation_keys=to_everyone(credential)) == "kept"
    for learner, instance_id in ((LIN, lins), (SAM, sams)):
        confirm(service, learner, instance_id)
    return lins, sams


def after_the_message_is_taken(service: WorkflowService, monkeypatch, then) -> None:
    """Runs ``then`` once, right after ``service`` saved the step that took the message."""
    real_save = service.save_all

    def save_all(*aggregates, **kwargs):
        real_save(*aggregates, **kwargs)
        if any("pay-all" in getattr(a, "received_messages", ()) for a in aggregates):
            monkeypatch.setattr(service, "save_all", real_save)
            then()

    monkeypatch.setattr(service, "save_all", save_all)


def test_two_schedulers_deliver_a_kept_message_by_correlation_keys_to_one_instance(
        service, replica, credential_id, monkeypatch):
    lins, sams = kept_for_both(service, credential_id)
    after_the_message_is_taken(service, monkeypatch, then=lambda: Scheduler(replica).run_once())

    Scheduler(service).run_once()
    Scheduler(replica).run_once()

    (taker,) = takers(service, "pay-all", lins, sams)
    assert {service.get_instance(i).status for i in (lins, sams)} == {COMPLETED, RUNNING}
    assert service.message_status("pay-all")["status"] == "delivered"
    assert service.message_status("pay-all")["delivered_to"] == taker


def test_a_scheduler_that_dies_after_an_instance_took_the_message_hands_it_to_no_other_instance(
        service, replica, credential_id, clock, monkeypatch):
    lins, sams = kept_for_both(service, credential_id)

    def die() -> None:
        raise ProcessDied

    after_the_message_is_taken(service, monkeypatch, then=die)
    with pytest.raises(ProcessDied):
        Scheduler(service).run_once()
    assert service.message_status("pay-all")["status"] == "pending"  # taken, but not yet recorded so

    Scheduler(replica).run_once()  # the dead process's claim still holds
    clock.advance(hours=1)  # long after the dead process's claim lapsed
    Scheduler(replica).run_once()

    (taker,) = takers(replica, "pay-all", lins, sams)
    assert {replica.get_instance(i).status for i in (lins, sams)} == {COMPLETED, RUNNING}
    assert replica.message_status("pay-all")["status"] == "delivered"
    assert replica.message_status("pay-all")["delivered_to"] == taker


OLD_DUE = """CREATE TABLE {schema}.workflow_due (
    kind text NOT NULL, instance_id uuid NOT NULL, key text NOT NULL, element_id text,
    due_at timestamptz NOT NULL, PRIMARY KEY (kind, instance_id, key))"""
OLD_INBOUND = """CREATE TABLE {schema}.workflow_inbound_messages (
    scope text NOT NULL, message_id text NOT NULL, name text NOT NULL, payload jsonb, instance_id uuid,
    correlation_keys jsonb NOT NULL, received_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending', delivered_to uuid, PRIMARY KEY (scope, message_id))"""


@pytest.fixture
def tables_of_an_older_release(schema_database) -> None:
    """The due-times and inbound tables as an older release created them."""
    with psycopg.connect(schema_database.conninfo(), autocommit=True) as connection:
        for statement in (OLD_DUE, OLD_INBOUND):
            connection.execute(statement.format(schema=f'"{schema_database.schema}"'))


def test_tables_created_by_an_older_release_get_the_back_off_and_claim_columns(
        tables_of_an_older_release, service, credential_id, clock):
    instance_id = service.start_instance(LIN, credential_id)
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-1", instance_id=instance_id) == "kept"
    confirm(service, LIN, instance_id)
    clock.advance(days=3)  # the reminder and overdue rows of "confirm your details" fall due too

    Scheduler(service).run_once()

    assert service.get_instance(instance_id).status == COMPLETED
    assert service.message_status("pay-1")["status"] == "delivered"


def test_a_process_starting_on_current_tables_takes_no_table_lock(service, schema_database):
    """ALTER TABLE … ADD COLUMN IF NOT EXISTS locks the table even when nothing is missing:
    each process start queued behind a long reader of the outbox, and every read behind it."""
    from application.outbox import tables

    datastore = service.recorder.datastore
    tables.ensure_tables(datastore)
    with psycopg.connect(schema_database.conninfo()) as reader:  # a long report, an open transaction
        reader.execute(f'SELECT count(*) FROM "{schema_database.schema}".{tables.OUTBOX}').fetchone()
        tables._ensured.discard((id(datastore), datastore.schema))  # as a new process would start
        starting = threading.Thread(target=tables.ensure_tables, args=(datastore,))
        starting.start()
        starting.join(2)
        waited = starting.is_alive()
        reader.rollback()  # lets an ALTER that waited through
        starting.join(10)
    assert not waited, "a process start waited for the reader's transaction"


def test_a_message_claimed_late_in_a_long_round_keeps_its_whole_lease(
        service, replica, credential_id, clock, monkeypatch):
    """Leases ran from the round's start: a message claimed six minutes into a round had a
    lease already over, and another replica could claim it while it was being delivered."""
    lins = service.start_instance(LIN, credential_id)
    sams = service.start_instance(SAM, credential_id)
    service.deliver_message(ADMIN, PAYMENT, {"amount": 1}, "pay-lin", instance_id=lins)
    clock.advance(seconds=1)
    service.deliver_message(ADMIN, PAYMENT, {"amount": 2}, "pay-sam", instance_id=sams)
    for learner, instance_id in ((LIN, lins), (SAM, sams)):
        confirm(service, learner, instance_id)
    real_deliver, others_claims = service._deliver_to, []

    def slow_then_watched(instance_id, message_id, name, payload):
        if message_id == "pay-lin":
            clock.advance(minutes=6)  # the first delivery takes six minutes
        else:  # meanwhile another replica's round looks at the message this round now delivers
            others_claims.append(replica.deliver_kept_messages())
        return real_deliver(instance_id, message_id, name, payload)

    monkeypatch.setattr(service, "_deliver_to", slow_then_watched)
    assert Scheduler(service).run_once() >= 2
    assert others_claims == [0]  # it found the message held
    assert takers(service, "pay-sam", lins, sams) == [sams]
