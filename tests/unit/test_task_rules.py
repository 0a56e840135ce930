"""WorkflowTask rules, on the aggregate alone (no I/O).

A Learner-lane task belongs to the learner from the start; a group task is claimed by a
member of its group (case-insensitively) and completed only by its assignee; nothing
happens to a completed or cancelled task; only an admin reassigns.
"""

from __future__ import annotations

from uuid import uuid4

import pytest

from application.service import WorkflowService
from domain.errors import Conflict, InvalidInput, NotAllowed
from domain.identity import Actor
from domain.task import CANCELLED, COMPLETED, OPEN, WorkflowTask
from interface.examples import load_example_catalog

LEARNER = Actor.of("learner-lin")
ADA = Actor.of("assessor-ada", "Assessor")
BEN = Actor.of("assessor-ben", "ASSESSOR")
OUTSIDER = Actor.of("mallory", "kitchen")
ADMIN = Actor.of("root", "admin")


def make_task(*, group: str | None = "assessor", assignee: str | None = None) -> WorkflowTask:
    return WorkflowTask(
        id=uuid4(),
        instance_id=uuid4(),
        learner_id=LEARNER.user_id,
        credential_id="cred",
        skill_id="skill",
        engine_task_id=str(uuid4()),
        element_id="assess_evidence",
        name="Assess evidence",
        kind="user",
        candidate_group=group,
        assignee=assignee,
        form="assess-evidence.schema.json",
        documentation="",
        due_at=None,
    )


def learner_task() -> WorkflowTask:
    return make_task(group=None, assignee=LEARNER.user_id)


def new_events(task: WorkflowTask) -> list:
    return task.collect_events()


# -- creation ------------------------------------------------------------------------------


def test_a_new_task_is_open_and_records_one_created_event() -> None:
    task = make_task()
    assert task.status == OPEN and task.is_open
    assert task.assignee is None
    assert [type(e).__name__ for e in new_events(task)] == ["Created"]


def test_the_learner_lane_task_is_assigned_to_the_learner_when_the_engine_creates_it() -> None:
    # The application turns the engine's "Learner" lane into the instance's own user:
    # run it on in-memory persistence (no I/O) and look at the first task.
    app = WorkflowService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        _skill, credential = load_example_catalog(app)
        instance = app.get_instance(app.start_instance(LEARNER, credential))
        (first,) = instance.open_tasks
        task = app.get_task(first)
        assert task.element_id == "submit_evidence"
        assert task.assignee == LEARNER.user_id
        assert task.candidate_group is None and task.is_learner_task
        assert task.learner_id == LEARNER.user_id
        # ...and the next, group task is offered to the group the lane names, unassigned.
        stored = {"statement": "A clean 6 mm fillet weld on mild steel plate.", "evidence_files": []}
        with pytest.raises(Exception):  # noqa: B017 - the form needs at least one file
            app.complete_task(LEARNER, first, stored)
    finally:
        app.close()


# -- claiming ------------------------------------------------------------------------------


def test_a_member_claims_a_group_task_with_any_case_of_the_group_name() -> None:
    task = make_task(group="assessor")
    task.claim(ADA)  # groups {"Assessor"} -> "assessor"
    assert task.assignee == ADA.user_id
    other = make_task(group="Assessor")
    other.claim(BEN)
    assert other.assignee == BEN.user_id


def test_a_non_member_cannot_claim() -> None:
    task = make_task()
    with pytest.raises(NotAllowed):
        task.claim(OUTSIDER)
    assert task.assignee is None
    assert [type(e).__name__ for e in new_events(task)] == ["Created"]


def test_an_admin_who_is_not_a_member_cannot_claim_either() -> None:
    task = make_task()
    with pytest.raises(NotAllowed):
        task.claim(ADMIN)


def test_claiming_a_task_someone_else_holds_is_a_conflict() -> None:
    task = make_task()
    task.claim(ADA)
    with pytest.raises(Conflict):
        task.claim(BEN)
    assert task.assignee == ADA.user_id


def test_reclaiming_ones_own_task_is_idempotent() -> None:
    task = make_task()
    task.claim(ADA)
    task.claim(ADA)
    assert [type(e).__name__ for e in new_events(task)] == ["Created", "Claimed"]


def test_a_learner_task_cannot_be_claimed_by_anyone_else() -> None:
    task = learner_task()
    with pytest.raises(NotAllowed):
        task.claim(ADA)
    task.claim(LEARNER)  # already theirs: nothing happens
    assert [type(e).__name__ for e in new_events(task)] == ["Created"]


def test_unclaim_by_assignee_then_another_member_can_claim() -> None:
    task = make_task()
    task.claim(ADA)
    with pytest.raises(NotAllowed):
        task.unclaim(BEN)
    task.unclaim(ADA)
    assert task.assignee is None
    task.claim(BEN)
    assert task.assignee == BEN.user_id


def test_an_admin_can_hand_back_someone_elses_task_but_not_a_learner_task() -> None:
    task = make_task()
    task.claim(ADA)
    task.unclaim(ADMIN)
    assert task.assignee is None
    with pytest.raises(NotAllowed):
        learner_task().unclaim(LEARNER)


# -- completing ----------------------------------------------------------------------------


def test_the_assignee_completes_with_data_and_evidence() -> None:
    task = make_task()
    task.claim(ADA)
    evidence = [{"id": "f1", "sha256": "ab"}]
    task.complete(ADA, {"score": 90}, evidence)
    assert task.status == COMPLETED
    assert task.completed_by == ADA.user_id
    assert task.completed_at == task.modified_on
    assert task.data == {"score": 90}
    assert task.evidence == evidence


def test_the_learner_completes_their_own_task_without_claiming() -> None:
    task = learner_task()
    task.complete(LEARNER, {"statement": "x"})
    assert task.status == COMPLETED


def test_a_non_member_cannot_complete_an_unclaimed_task() -> None:
    with pytest.raises(NotAllowed):
        make_task().complete(OUTSIDER, {})


def test_a_member_must_claim_before_completing() -> None:
    task = make_task()
    with pytest.raises(Conflict):
        task.complete(ADA, {})
    assert task.status == OPEN


def test_only_the_assignee_completes_a_claimed_task() -> None:
    task = make_task()
    task.claim(ADA)
    with pytest.raises(NotAllowed):
        task.complete(BEN, {"score": 1})
    with pytest.raises(NotAllowed):
        task.complete(ADMIN, {"score": 1})
    with pytest.raises(NotAllowed):
        learner_task().complete(ADA, {})
    assert task.status == OPEN


# -- nothing happens to a finished task ----------------------------------------------------


def _completed() -> WorkflowTask:
    task = make_task()
    task.claim(ADA)
    task.complete(ADA, {"score": 80})
    return task


def _cancelled() -> WorkflowTask:
    task = make_task()
    task.cancel("the instance was cancelled")
    return task


@pytest.mark.parametrize("finished", [_completed, _cancelled], ids=["completed", "cancelled"])
@pytest.mark.parametrize(
    "action",
    [
        lambda t: t.claim(BEN),
        lambda t: t.claim(ADA),
        lambda t: t.unclaim(ADA),
        lambda t: t.complete(ADA, {"score": 1}),
        lambda t: t.reassign(ADMIN, "someone"),
    ],
    ids=["claim-other", "claim-self", "unclaim", "complete", "reassign"],
)
def test_nothing_happens_to_a_finished_task(finished, action) -> None:
    task = finished()
    before = (task.status, task.assignee, task.version)
    with pytest.raises(Conflict):
        action(task)
    assert (task.status, task.assignee, task.version) == before


def test_cancel_is_idempotent_and_keeps_a_completed_task_completed() -> None:
    task = _cancelled()
    version = task.version
    task.cancel("again")
    assert task.version == version and task.status == CANCELLED
    assert task.cancel_reason == "the instance was cancelled"
    done = _completed()
    done.cancel("late")
    assert done.status == COMPLETED


# -- reassigning ---------------------------------------------------------------------------


def test_only_an_admin_reassigns() -> None:
    task = make_task()
    task.claim(ADA)
    with pytest.raises(NotAllowed):
        task.reassign(ADA, BEN.user_id)
    with pytest.raises(NotAllowed):
        task.reassign(LEARNER, BEN.user_id)
    assert task.assignee == ADA.user_id
    task.reassign(ADMIN, BEN.user_id)
    assert task.assignee == BEN.user_id
    task.reassign(ADMIN, BEN.user_id)  # same assignee: no new event
    assert [type(e).__name__ for e in new_events(task)] == ["Created", "Claimed", "Reassigned"]


def test_reassigning_to_a_blank_user_is_refused() -> None:
    task = make_task()
    with pytest.raises(InvalidInput):  # bad input (422), not a state conflict
        task.reassign(ADMIN, "  ")
    with pytest.raises(InvalidInput):
        task.reassign(ADMIN, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="user id"):  # kept in the task inbox's index
        task.reassign(ADMIN, "u" * 256)
    assert task.assignee is None
    task.reassign(ADMIN, "u" * 255)
    assert task.assignee == "u" * 255


# -- visibility ----------------------------------------------------------------------------


def test_who_can_view_a_task() -> None:
    task = make_task()
    assert task.can_view(ADA) and task.can_view(LEARNER) and task.can_view(ADMIN)
    assert not task.can_view(OUTSIDER)


def test_replaying_the_events_gives_the_same_task() -> None:
    task = make_task()
    task.claim(ADA)
    task.complete(ADA, {"score": 80}, [{"id": "f"}])
    events = task.collect_events()
    copy = None
    for e in events:
        copy = e.mutate(copy)
    assert copy.__dict__ == task.__dict__


def test_a_cancelled_task_is_a_conflict_before_any_form_check() -> None:
    """Completing a cancelled task answers 409 whatever data comes with it (issue 4)."""
    task = WorkflowTask(
        id=uuid4(), instance_id=uuid4(), learner_id="lin", credential_id="c", skill_id="s",
        engine_task_id="e", element_id="submit", name="Submit", kind="user", candidate_group=None,
        assignee="lin", form=None, documentation="", due_at=None,
    )
    task.cancel("instance cancelled")
    with pytest.raises(Conflict, match="cancelled"):
        task.check_can_complete(Actor.of("lin"))


def _group_task_of(learner: str) -> WorkflowTask:
    return WorkflowTask(
        id=uuid4(), instance_id=uuid4(), learner_id=learner, credential_id="c", skill_id="s",
        engine_task_id="e", element_id="assess_evidence", name="Assess", kind="user",
        candidate_group="assessor", assignee=None, form=None, documentation="", due_at=None,
    )


def test_a_learner_in_the_assessor_group_cannot_assess_their_own_credential() -> None:
    task = _group_task_of("ada")
    ada_who_also_assesses = Actor.of("ada", "Assessor")
    with pytest.raises(NotAllowed, match="own instance"):
        task.claim(ada_who_also_assesses)
    with pytest.raises(NotAllowed, match="own instance"):
        task.reassign(Actor.of("root", "admin"), "ada")
    task.reassign(Actor.of("root", "admin"), "ben")
    task.reassign(Actor.of("root", "admin"), "ben")  # no change, no event
    assert [type(e).__name__ for e in task.collect_events()] == ["Created", "Reassigned"]


def test_a_learner_cannot_complete_a_group_task_of_their_own_instance_even_if_assigned() -> None:
    task = _group_task_of("ada")
    task._reassigned(by="root", assignee="ada")  # as an old store might hold it
    with pytest.raises(NotAllowed, match="own instance"):
        task.check_can_complete(Actor.of("ada", "assessor"))


def test_unclaiming_an_unclaimed_task_is_nothing_for_its_group_and_refused_to_others() -> None:
    task = make_task()
    task.unclaim(ADA)  # already with the group: nothing happens
    task.unclaim(ADMIN)
    assert [type(e).__name__ for e in new_events(task)] == ["Created"]
    for outsider in (LEARNER, OUTSIDER):
        with pytest.raises(NotAllowed):
            task.unclaim(outsider)


def test_a_task_remembers_who_last_changed_its_assignee() -> None:
    task = make_task()
    assert task.assignment_by is None
    task.claim(ADA)
    assert task.assignment_by == ADA.user_id
    task.unclaim(ADMIN)
    assert task.assignment_by == ADMIN.user_id
    task.reassign(ADMIN, BEN.user_id)
    assert (task.assignee, task.assignment_by) == (BEN.user_id, ADMIN.user_id)
