"""The one-round-trip event insert (ADR 0010) on the real PostgreSQL: it is what the
application uses, it takes the same table lock as eventsourcing's path (so positions follow
commit order), it refuses a concurrent change, and writes with a tracking record still
store both atomically."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from application.event_recorder import FUNCTION, LockedInsertRecorder
from domain.identity import Actor
from interface.examples import load_example_catalog

pytestmark = pytest.mark.integration


def _event(originator: Any, version: int) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic="test:Event", state=b"{}")


def test_the_application_writes_through_the_locked_function(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(app.recorder, LockedInsertRecorder)
    _skill, credential = load_example_catalog(app)
    calls: list[int] = []
    one_trip = app.recorder._insert_in_one_trip

    def spy(stored_events: Any) -> Any:
        calls.append(len(stored_events))
        return one_trip(stored_events)

    monkeypatch.setattr(app.recorder, "_insert_in_one_trip", spy)
    instance_id = app.start_instance(Actor.of("learner-lin"), credential)
    assert calls == [2]  # the instance's Started and its first task's Created, together
    assert app.saved_position() == app.recorder.max_notification_id()
    assert app.get_instance(instance_id).version == 1
    with psycopg.connect(_conninfo(app)) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = %s", (app.recorder.datastore.schema, FUNCTION),
        ).fetchone()
    assert found[0] == 1


def test_positions_come_back_in_order_and_a_second_write_of_a_version_is_refused(app: Any) -> None:
    recorder = app.recorder
    originator = uuid4()
    ids = recorder.insert_events([_event(originator, 1), _event(originator, 2), _event(originator, 3)])
    assert len(ids) == 3 and ids == sorted(ids)
    assert ids[-1] == recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        recorder.insert_events([_event(originator, 3)])
    assert [e.originator_version for e in recorder.select_events(originator)] == [1, 2, 3]


def test_the_insert_waits_for_the_table_lock(app: Any) -> None:
    """While another transaction is writing to the events table (it holds ROW EXCLUSIVE,
    as any INSERT does until it commits), the insert does not take a position: its
    EXCLUSIVE lock waits for that transaction, then it goes. A plain INSERT would not wait,
    and could commit a lower position after a follower read past it."""
    recorder = app.recorder
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    done = threading.Event()
    result: list[Any] = []

    def write() -> None:
        result.append(recorder.insert_events([_event(uuid4(), 1)]))
        done.set()

    with psycopg.connect(_conninfo(app)) as holder:
        holder.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
        head_while_locked = holder.execute(f"SELECT max(notification_id) FROM {table}").fetchone()[0]
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)
        assert not done.is_set(), "the insert went ahead while another writer held the table lock"
        holder.commit()
    writer.join(10)
    assert done.is_set()
    assert result[0][0] > (head_while_locked or 0)


def test_a_write_with_tracking_stores_both_or_neither(app: Any) -> None:
    recorder = app.recorder
    originator = uuid4()
    recorder.insert_events([_event(originator, 1)], tracking=Tracking("kafka:test:0", 7))
    assert recorder.max_tracking_id("kafka:test:0") == 7
    with pytest.raises(IntegrityError):  # the same message again: neither row is written
        recorder.insert_events([_event(originator, 2)], tracking=Tracking("kafka:test:0", 7))
    assert [e.originator_version for e in recorder.select_events(originator)] == [1]


def _conninfo(app: Any) -> str:
    kwargs = app.recorder.datastore.pool.kwargs
    return psycopg.conninfo.make_conninfo(
        dbname=kwargs.get("dbname"), host=kwargs.get("host"), port=kwargs.get("port"),
        user=kwargs.get("user"), password=kwargs.get("password") or None,
    )


def test_several_tasks_load_together_exactly_as_one_by_one(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from application.contract import state_of
    from domain.errors import NotFound
    from domain.task import WorkflowTask

    _skill, credential = load_example_catalog(app)
    instances = [app.start_instance(Actor.of(f"learner-{n}"), credential) for n in range(3)]
    task_ids = [task for instance in instances for task in app.get_instance(instance).all_tasks]
    app.reassign_task(Actor.of("root", "admin"), task_ids[1], "learner-9")  # one with two events
    one_by_one = [app.get_task(task) for task in task_ids]
    assert one_by_one[1].version == 2
    singles: list[Any] = []
    monkeypatch.setattr(app.recorder, "select_events", lambda *a, **k: singles.append(a) or [])
    together = app.get_tasks(list(reversed(task_ids)))
    assert singles == []  # one statement for all of them, not a read each
    assert [t.id for t in together] == list(reversed(task_ids))
    assert all(isinstance(t, WorkflowTask) for t in together)
    assert [state_of(t) for t in reversed(together)] == [state_of(t) for t in one_by_one]
    assert [t.version for t in reversed(together)] == [t.version for t in one_by_one]
    with pytest.raises(NotFound):
        app.get_tasks([task_ids[0], uuid4()])
    with pytest.raises(NotFound):  # an instance is not a task
        app.get_tasks([task_ids[0], instances[0]])
