"""Deadlines with an injected clock: the example's 14-day assessment deadline expires the
instance (outcome fail at ``end_expired``), once, across restarts and racing replicas;
task due dates bring a reminder email and an overdue mark."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from application.bootstrap import bootstrap, open_file_store
from application.engine.clock import as_utc
from application.service import WorkflowService
from application.timers.due import reminder_at
from application.timers.scheduler import Scheduler
from domain.identity import Actor
from domain.instance import COMPLETED, FAIL, RUNNING, TIMER_FIRED
from domain.task import CANCELLED
from interface.examples import load_example_catalog
from tests.fixtures.clock import T0, ManualClock

pytestmark = pytest.mark.integration

LIN = Actor.of("learner-lin", email="lin@example.org")
ADMIN = Actor.of("root", "admin")
PAID_BPMN = Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "paid-credential.bpmn"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(settings, schema_database, clock):
    app = bootstrap(settings, database=schema_database, clock=clock)
    yield app
    app.close()


def waiting_for_assessment(app: WorkflowService, settings) -> UUID:
    _skill, credential_id = load_example_catalog(app)
    instance_id = app.start_instance(LIN, credential_id)
    stored = open_file_store(settings).write([b"weld notes\n"], "text/plain")
    app.attach_file(LIN, instance_id, file_id=stored.file_id, extension=stored.extension,
                    media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="notes.txt")
    (submit,) = app.get_instance(instance_id).open_tasks
    app.complete_task(LIN, submit, {"statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.",
                                    "evidence_files": [str(stored.file_id)]})
    return instance_id


def timer_events(app: WorkflowService, instance_id: UUID) -> list[object]:
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(start=1, limit=10_000)]
    return [e for e in events if e.originator_id == instance_id and getattr(e, "cause", None) == TIMER_FIRED]


def test_the_deadline_is_due_14_days_after_the_assessment_started_by_the_injected_clock(service, settings):
    instance_id = waiting_for_assessment(service, settings)

    (timer,) = service.get_instance(instance_id).timers
    assert timer["element_id"] == "assessment_deadline"
    assert as_utc(timer["due_at"]) == T0 + timedelta(days=14)


def test_the_14_day_deadline_expires_the_instance_with_outcome_fail(service, settings, clock):
    instance_id = waiting_for_assessment(service, settings)
    (assess,) = service.get_instance(instance_id).open_tasks
    scheduler = Scheduler(service)

    clock.advance(days=13, hours=23)
    scheduler.run_once()
    assert service.get_instance(instance_id).status == RUNNING

    clock.advance(hours=1, seconds=1)
    scheduler.run_once()
    instance = service.get_instance(instance_id)
    assert (instance.status, instance.result, instance.end_element_id) == (COMPLETED, FAIL, "end_expired")
    assert instance.timers == [] and instance.open_tasks == []
    assert service.get_task(assess).status == CANCELLED
    assert len(timer_events(service, instance_id)) == 1
    assert scheduler.run_once() == 0
    assert scheduler.due_times.due(clock() + timedelta(days=365)) == []


def test_a_restart_between_due_time_and_firing_still_fires_once(settings, schema_database, clock):
    first = bootstrap(settings, database=schema_database, clock=clock)
    instance_id = waiting_for_assessment(first, settings)
    Scheduler(first).run_once()  # the due time is known, then the service goes down
    first.close()

    clock.advance(days=20)  # down past the deadline
    second = bootstrap(settings, database=schema_database, clock=clock)
    try:
        assert Scheduler(second).run_once() >= 1
        assert Scheduler(second).run_once() == 0
        instance = second.get_instance(instance_id)
        assert (instance.status, instance.end_element_id) == (COMPLETED, "end_expired")
        assert len(timer_events(second, instance_id)) == 1
    finally:
        second.close()


def test_replicas_racing_on_one_due_timer_fire_it_once(settings, schema_database, clock):
    apps = [bootstrap(settings, database=schema_database, clock=clock) for _ in range(3)]
    try:
        instance_id = waiting_for_assessment(apps[0], settings)
        (timer,) = apps[0].get_instance(instance_id).timers
        clock.advance(days=15)
        start = threading.Barrier(len(apps))
        results: list[bool] = []

        def fire(app: WorkflowService) -> None:
            start.wait()
            results.append(app.fire_timer(instance_id, timer["engine_task_id"]))

        threads = [threading.Thread(target=fire, args=(app,)) for app in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(results) == [False, False, True]
        assert len(timer_events(apps[0], instance_id)) == 1
    finally:
        for app in apps:
            app.close()


def test_a_timer_does_not_fire_before_it_is_due(service, settings, clock):
    instance_id = waiting_for_assessment(service, settings)
    (timer,) = service.get_instance(instance_id).timers
    clock.advance(days=13)

    assert service.fire_timer(instance_id, timer["engine_task_id"]) is False
    assert service.get_instance(instance_id).status == RUNNING


def test_a_task_due_date_brings_a_reminder_then_an_overdue_mark(service, clock):
    _skill, credential_id = load_example_catalog(service)
    number = service.upload_definition_version(ADMIN, credential_id, {"paid-credential.bpmn": PAID_BPMN.read_bytes()})
    service.deploy_definition_version(ADMIN, credential_id, number)
    instance_id = service.start_instance(LIN, credential_id)
    (task_id,) = service.get_instance(instance_id).open_tasks
    task = service.get_task(task_id)
    assert task.due_at == T0 + timedelta(days=2)
    scheduler = Scheduler(service)

    clock.advance(hours=30)
    scheduler.run_once()
    assert not service.get_task(task_id).reminded
    assert reminder_at(task.due_at, "P2D") == T0 + timedelta(hours=48 - 9.6)
    clock.advance(hours=9)
    scheduler.run_once()
    assert service.get_task(task_id).reminded and not service.get_task(task_id).overdue

    clock.advance(hours=10)
    scheduler.run_once()
    assert service.get_task(task_id).overdue
    assert scheduler.run_once() == 0


def test_start_workers_fires_due_timers_in_the_background_until_stopped(service, settings, clock):
    import time

    import msgspec

    from application.workers import start_workers

    instance_id = waiting_for_assessment(service, settings)
    clock.advance(days=15)
    workers = start_workers(service, msgspec.structs.replace(settings, worker_poll_ms=50))
    try:
        deadline = time.monotonic() + 10
        while service.get_instance(instance_id).status == RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        workers.stop()
    assert service.get_instance(instance_id).end_element_id == "end_expired"
    assert not workers.running


# -- found in review (2026-11-27) ------------------------------------------------------------


def test_a_correlation_value_postgresql_refuses_does_not_stop_every_other_timer(service, settings, clock, caplog):
    """An instance waiting for a message correlated on a value with a NUL (from a script or a
    form): its wait row was refused, the reader rolled back at that event on every round,
    and no deadline, reminder or kept message of any instance fired again."""
    victim = waiting_for_assessment(service, settings)  # the example's 14-day deadline
    _skill, credential = load_example_catalog(service)
    bundle = (Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "correlated-on-a-nul.bpmn").read_bytes()
    service.deploy_definition_version(ADMIN, credential,
                                      service.upload_definition_version(ADMIN, credential, {"dated.bpmn": bundle}))
    poison = service.start_instance(Actor.of("learner-sam"), credential)
    assert service.get_instance(poison).status == RUNNING  # waits for "reply", correlated on "x\0y"

    clock.advance(days=15)
    Scheduler(service).run_once()

    instance = service.get_instance(victim)
    assert (instance.status, instance.end_element_id) == (COMPLETED, "end_expired")
    assert f"instance {poison} waits for message 'reply'" in caplog.text


def test_a_scheduler_back_after_a_due_date_marks_the_task_overdue_without_a_due_soon_reminder(service, clock):
    _skill, credential = load_example_catalog(service)
    number = service.upload_definition_version(ADMIN, credential, {"paid-credential.bpmn": PAID_BPMN.read_bytes()})
    service.deploy_definition_version(ADMIN, credential, number)
    (task_id,) = service.get_instance(service.start_instance(LIN, credential)).open_tasks
    clock.advance(days=3)  # the scheduler was down across the task's 2-day due date

    scheduler = Scheduler(service)
    scheduler.run_once()
    scheduler.run_once()

    task = service.get_task(task_id)
    assert task.overdue and not task.reminded
    assert scheduler.due_times.due(clock()) == []  # nothing left to try each round
