"""WorkflowInstance rules, on the aggregate alone (no I/O)."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from domain.errors import Conflict, NotAllowed
from domain.identity import Actor
from domain.instance import (
    CANCELLED,
    COMPLETED,
    FAIL,
    FAILED,
    PASS,
    RUNNING,
    WorkflowInstance,
)

LEARNER = Actor.of("learner-lin")
OTHER = Actor.of("learner-sam")
ASSESSOR = Actor.of("assessor-ada", "assessor")
ADMIN = Actor.of("root", "Admin")


def make_instance(open_tasks: int = 1) -> WorkflowInstance:
    return WorkflowInstance(
        id=uuid4(),
        user_id=LEARNER.user_id,
        user_email="lin@example.org",
        credential_id="cred",
        skill_id="skill",
        definition_id=uuid4(),
        definition_version=1,
        engine_state={"data": {"a": 1}},
        opened_tasks=[uuid4() for _ in range(open_tasks)],
        messages=[],
        timers=[{"element_id": "t", "engine_task_id": "e", "due_at": None}],
    )


def advance(instance: WorkflowInstance, *, opened=(), closed=()) -> None:
    instance.advance(
        cause="task_completed", cause_id=None, engine_state={"data": {"b": 2}},
        opened_tasks=list(opened), closed_tasks=list(closed), messages=[], timers=[],
    )


def test_a_started_instance_is_running_with_its_tasks_open() -> None:
    instance = make_instance(open_tasks=2)
    assert instance.status == RUNNING and instance.is_running
    assert len(instance.open_tasks) == 2
    assert instance.result is None and instance.ended_at is None
    assert instance.data == {"a": 1}


def test_advancing_closes_and_opens_tasks() -> None:
    instance = make_instance()
    (first,) = instance.open_tasks
    second = uuid4()
    advance(instance, opened=[second], closed=[first])
    assert instance.open_tasks == [second]
    assert instance.data == {"b": 2}


@pytest.mark.parametrize("actor", [LEARNER, ADMIN], ids=["learner", "admin"])
def test_cancelling_returns_the_open_tasks_to_cancel(actor: Actor) -> None:
    instance = make_instance(open_tasks=2)
    expected = list(instance.open_tasks)
    time.sleep(0.002)
    closed = instance.cancel(actor, "changed my mind")
    assert closed == expected
    assert instance.status == CANCELLED
    assert instance.open_tasks == [] and instance.timers == []
    assert instance.cancel_reason == "changed my mind"
    # ended_at is the time of the Cancelled event itself, not of the event before it.
    assert instance.ended_at == instance.modified_on
    assert instance.ended_at > instance.created_on
    events = instance.collect_events()
    assert type(events[-1]).__name__ == "Cancelled"
    assert events[-1].closed_tasks == expected


@pytest.mark.parametrize("actor", [OTHER, ASSESSOR], ids=["another-learner", "assessor"])
def test_only_the_learner_or_an_admin_may_cancel(actor: Actor) -> None:
    instance = make_instance()
    with pytest.raises(NotAllowed):
        instance.cancel(actor, "no")
    assert instance.is_running and instance.version == 1


def _completed() -> WorkflowInstance:
    instance = make_instance()
    time.sleep(0.002)
    instance.complete(result=PASS, end_element_id="end_passed", evidence=[{"id": "f"}])
    return instance


def _cancelled() -> WorkflowInstance:
    instance = make_instance()
    instance.cancel(LEARNER, "bye")
    return instance


def _failed() -> WorkflowInstance:
    instance = make_instance()
    instance.fail(element_id="script", error="boom")
    return instance


def test_completing_records_result_end_and_time() -> None:
    instance = _completed()
    assert instance.status == COMPLETED
    assert instance.result == PASS
    assert instance.end_element_id == "end_passed"
    assert instance.evidence == [{"id": "f"}]
    assert instance.open_tasks == [] and instance.timers == []
    assert instance.ended_at == instance.modified_on > instance.created_on


def test_an_instance_ends_in_pass_or_fail_only() -> None:
    instance = make_instance()
    with pytest.raises(Conflict):
        instance.complete(result="maybe", end_element_id="x", evidence=[])
    assert instance.is_running
    instance.complete(result=FAIL, end_element_id="end_failed", evidence=[])
    assert instance.result == FAIL


def test_failing_closes_every_open_task() -> None:
    instance = make_instance(open_tasks=3)
    expected = list(instance.open_tasks)
    assert instance.fail(element_id="s", error="boom") == expected
    assert instance.status == FAILED and instance.error == "boom" and instance.open_tasks == []
    assert instance.ended_at == instance.modified_on


@pytest.mark.parametrize("finished", [_completed, _cancelled, _failed], ids=["completed", "cancelled", "failed"])
@pytest.mark.parametrize(
    "action",
    [
        lambda i: advance(i),
        lambda i: i.complete(result=PASS, end_element_id="e", evidence=[]),
        lambda i: i.cancel(LEARNER, "again"),
        lambda i: i.fail(element_id=None, error="x"),
        lambda i: i.attach_file(LEARNER, {"id": "f2"}),
    ],
    ids=["advance", "complete", "cancel", "fail", "attach"],
)
def test_a_finished_instance_does_not_move(finished, action) -> None:
    instance = finished()
    before = (instance.status, instance.version, instance.result)
    with pytest.raises(Conflict):
        action(instance)
    assert (instance.status, instance.version, instance.result) == before


def test_files_are_attached_by_the_learner_or_an_admin_once() -> None:
    instance = make_instance()
    instance.attach_file(LEARNER, {"id": "f1", "sha256": "a"})
    instance.attach_file(ADMIN, {"id": "f2", "sha256": "b"})
    with pytest.raises(NotAllowed):
        instance.attach_file(ASSESSOR, {"id": "f3"})
    with pytest.raises(Conflict):
        instance.attach_file(LEARNER, {"id": "f1"})
    assert sorted(instance.files) == ["f1", "f2"]


def test_deleting_needs_an_admin_and_a_finished_instance() -> None:
    instance = make_instance()
    with pytest.raises(NotAllowed):
        instance.delete(LEARNER)
    with pytest.raises(Conflict):
        instance.delete(ADMIN)
    instance.cancel(ADMIN, "cleanup")
    instance.delete(ADMIN)
    assert instance.status == "deleted"


def test_visibility() -> None:
    instance = make_instance()
    assert instance.can_view(LEARNER) and instance.can_view(ADMIN)
    assert not instance.can_view(OTHER) and not instance.can_view(ASSESSOR)


def test_replaying_the_events_gives_the_same_instance_including_ended_at() -> None:
    instance = make_instance()
    instance.attach_file(LEARNER, {"id": "f1"})
    advance(instance, opened=[uuid4()], closed=list(instance.open_tasks))
    time.sleep(0.002)
    instance.complete(result=PASS, end_element_id="end_passed", evidence=[{"id": "f1"}])
    copy = None
    for e in instance.collect_events():
        copy = e.mutate(copy)
    assert copy.__dict__ == instance.__dict__
    assert copy.ended_at == copy.modified_on


def test_an_incident_is_dated_by_its_own_event_not_the_one_before() -> None:
    instance = make_instance()
    started_at = instance.modified_on
    instance.raise_incident(incident_id="i-1", kind="email", subject={"event_id": "e", "index": 0},
                            reason="SMTP refused the recipient", attempts=8)
    assert instance.incidents["i-1"]["raised_at"] == instance.modified_on
    assert instance.incidents["i-1"]["raised_at"] != started_at


def test_an_instance_holds_at_most_max_files_even_for_an_admin() -> None:
    instance = make_instance()
    instance.attach_file(LEARNER, {"id": "f1"}, max_files=2)
    instance.attach_file(ADMIN, {"id": "f2"}, max_files=2)
    with pytest.raises(Conflict, match="already holds 2 files"):
        instance.attach_file(ADMIN, {"id": "f3"}, max_files=2)
    with pytest.raises(Conflict, match="already holds 2 files"):
        instance.check_can_attach(LEARNER, max_files=2)
    instance.check_can_attach(LEARNER, max_files=3)
    assert list(instance.files) == ["f1", "f2"]
