"""The example credential process end to end on real PostgreSQL: what learners,
assessors and admins see, and what the store keeps."""

from __future__ import annotations

import hashlib
import threading
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.bootstrap import bootstrap, open_file_store
from application.service import WorkflowService
from domain.errors import Conflict, InvalidInput, NotAllowed, NotFound
from domain.identity import Actor
from domain.instance import CANCELLED, COMPLETED, FAIL, PASS, RUNNING
from domain.task import CANCELLED as TASK_CANCELLED
from domain.task import COMPLETED as TASK_COMPLETED
from domain.task import OPEN
from interface.examples import catalog_event, load_example_catalog

pytestmark = pytest.mark.integration

LIN = Actor.of("learner-lin", email="lin@example.org")
SAM = Actor.of("learner-sam", email="sam@example.org")
ADA = Actor.of("assessor-ada", "Assessor")
BEN = Actor.of("assessor-ben", "assessor")
OUTSIDER = Actor.of("mallory", "kitchen")
ADMIN = Actor.of("root", "admin")
EVIDENCE = b"Photo notes: a 6 mm fillet weld on mild steel, even bead, no porosity.\n"
STATEMENT = "My fillet weld on 6 mm mild steel, photographed after cleaning."


# -- helpers -------------------------------------------------------------------------------


def attach(app: WorkflowService, settings: Any, learner: Actor, instance_id: UUID) -> dict[str, Any]:
    stored = open_file_store(settings).write([EVIDENCE], "text/plain")
    assert stored.path.read_bytes() == EVIDENCE
    return app.attach_file(
        learner, instance_id, file_id=stored.file_id, extension=stored.extension,
        media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="weld-notes.txt",
    )


def open_task(app: WorkflowService, instance_id: UUID) -> UUID:
    (task,) = app.get_instance(instance_id).open_tasks
    return task


def submit(app: WorkflowService, learner: Actor, instance_id: UUID, file_id: str) -> UUID:
    task = open_task(app, instance_id)
    app.complete_task(learner, task, {"statement": STATEMENT, "evidence_files": [file_id]})
    return task


def assess(app: WorkflowService, instance_id: UUID, score: int) -> tuple[UUID, UUID]:
    task = open_task(app, instance_id)
    app.claim_task(ADA, task)
    app.complete_task(ADA, task, {"score": score, "feedback": "Reviewed against the level 2 standard."})
    observe = open_task(app, instance_id)
    app.claim_task(ADA, observe)
    app.complete_task(ADA, observe, {})
    return task, observe


def stored_events(app: WorkflowService, originator_id: UUID) -> list[Any]:
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(start=1, limit=100_000)]
    return [e for e in events if e.originator_id == originator_id]


@pytest.fixture
def catalog(app: WorkflowService) -> tuple[str, str]:
    return load_example_catalog(app)


# -- pass, fail, manual task -----------------------------------------------------------------


def test_a_learner_passes_with_score_85_and_the_completed_event_carries_the_evidence(
    app: WorkflowService, settings: Any, catalog: tuple[str, str]
) -> None:
    skill_id, credential_id = catalog
    instance_id = app.start_instance(LIN, credential_id)
    instance = app.get_instance(instance_id)
    assert instance.status == RUNNING and instance.user_id == LIN.user_id
    assert instance.skill_id == skill_id and instance.definition_version == 1

    file = attach(app, settings, LIN, instance_id)
    submit_task = submit(app, LIN, instance_id, file["id"])
    assess_task, observe_task = assess(app, instance_id, 85)

    instance = app.get_instance(instance_id)
    assert instance.status == COMPLETED
    assert instance.result == PASS
    assert instance.end_element_id == "end_passed"
    assert instance.open_tasks == []
    assert instance.ended_at is not None and instance.ended_at == instance.modified_on
    for task_id in (submit_task, assess_task, observe_task):
        assert app.get_task(task_id).status == TASK_COMPLETED
    assert app.get_task(assess_task).data["score"] == 85
    assert app.get_task(assess_task).completed_by == ADA.user_id

    completed = [e for e in stored_events(app, instance_id) if type(e).__name__ == "Completed"]
    (event,) = completed
    assert event.result == PASS and event.end_element_id == "end_passed"
    (evidence,) = event.evidence
    assert evidence["id"] == file["id"]
    assert evidence["sha256"] == hashlib.sha256(EVIDENCE).hexdigest()
    assert evidence["size"] == len(EVIDENCE)
    assert evidence["media_type"] == "text/plain"
    assert evidence["name"] == "weld-notes.txt"
    # the emails the process sent on the way
    advanced = [e for e in stored_events(app, instance_id) if type(e).__name__ == "Advanced"]
    templates = [m["payload"]["template"] for e in advanced for m in e.messages if m["name"] == "email"]
    assert templates == ["evidence_submitted", "credential_passed"]


def test_a_learner_fails_with_score_40(app: WorkflowService, settings: Any, catalog: tuple[str, str]) -> None:
    _skill, credential_id = catalog
    instance_id = app.start_instance(SAM, credential_id)
    file = attach(app, settings, SAM, instance_id)
    submit(app, SAM, instance_id, file["id"])
    assess(app, instance_id, 40)
    instance = app.get_instance(instance_id)
    assert instance.status == COMPLETED
    assert instance.result == FAIL
    assert instance.end_element_id == "end_failed"
    assert instance.evidence == []
    (event,) = [e for e in stored_events(app, instance_id) if type(e).__name__ == "Completed"]
    assert event.result == FAIL and event.evidence == []


def test_the_manual_task_is_marked_done_by_its_assignee_without_data(
    app: WorkflowService, settings: Any, catalog: tuple[str, str]
) -> None:
    _skill, credential_id = catalog
    instance_id = app.start_instance(LIN, credential_id)
    file = attach(app, settings, LIN, instance_id)
    submit(app, LIN, instance_id, file["id"])
    task = open_task(app, instance_id)
    app.claim_task(ADA, task)
    app.complete_task(ADA, task, {"score": 70, "feedback": "ok"})
    observe = app.get_task(open_task(app, instance_id))
    assert observe.kind == "manual"
    assert observe.element_id == "observe_demonstration"
    assert observe.form is None and observe.candidate_group == "assessor" and observe.assignee is None
    assert "in person" in observe.documentation
    assert app.task_form(observe) is None
    with pytest.raises(Conflict):
        app.complete_task(BEN, observe.id, {})  # a member who has not claimed it
    with pytest.raises(NotFound):  # not in the group: the task is not even visible
        app.claim_task(OUTSIDER, observe.id)
    app.claim_task(BEN, observe.id)
    with pytest.raises(InvalidInput):
        app.complete_task(BEN, observe.id, {"note": "a manual task has no form"})
    assert app.get_task(observe.id).status == OPEN
    app.complete_task(BEN, observe.id, {})
    assert app.get_task(observe.id).status == TASK_COMPLETED
    assert app.get_instance(instance_id).result == PASS  # 70 is enough


def test_outsiders_do_not_see_tasks_or_instances(app: WorkflowService, catalog: tuple[str, str]) -> None:
    _skill, credential_id = catalog
    instance_id = app.start_instance(LIN, credential_id)
    task = open_task(app, instance_id)
    with pytest.raises(NotFound):
        app.visible_instance(SAM, instance_id)
    with pytest.raises(NotFound):
        app.complete_task(SAM, task, {"statement": STATEMENT, "evidence_files": [str(uuid4())]})
    with pytest.raises(NotFound):
        app.cancel_instance(SAM, instance_id, "not mine")
    assert app.get_instance(instance_id).is_running


# -- a rejected submission changes nothing ----------------------------------------------------


def _snapshot(app: WorkflowService, instance_id: UUID, task_id: UUID) -> tuple[int, int, int]:
    return (
        app.recorder.max_notification_id(),
        app.get_instance(instance_id).version,
        app.get_task(task_id).version,
    )


@pytest.mark.parametrize(
    ("data", "paths"),
    [
        ({"statement": "too short", "evidence_files": []}, {"$.statement", "$.evidence_files"}),
        ({"evidence_files": ["not-a-uuid"], "extra": 1}, {"$.statement", "$.evidence_files[0]", "$.extra"}),
        ({"statement": 5, "evidence_files": "x"}, {"$.statement", "$.evidence_files"}),
        ({"_private": 1}, {"$._private"}),
        ([1, 2], {"$"}),
    ],
    ids=["short-and-empty", "missing-bad-extra", "wrong-types", "underscore", "not-an-object"],
)
def test_a_rejected_form_submission_changes_nothing(
    app: WorkflowService, settings: Any, catalog: tuple[str, str], data: Any, paths: set[str]
) -> None:
    _skill, credential_id = catalog
    instance_id = app.start_instance(LIN, credential_id)
    attach(app, settings, LIN, instance_id)
    task = open_task(app, instance_id)
    before = _snapshot(app, instance_id, task)
    with pytest.raises(InvalidInput) as raised:
        app.complete_task(LIN, task, data)
    found = {p.path for p in raised.value.problems}
    assert paths <= found, found
    assert _snapshot(app, instance_id, task) == before
    assert app.get_task(task).status == OPEN


def test_a_file_not_attached_to_the_instance_is_refused_with_its_path(
    app: WorkflowService, settings: Any, catalog: tuple[str, str]
) -> None:
    _skill, credential_id = catalog
    mine = app.start_instance(LIN, credential_id)
    other = app.start_instance(SAM, credential_id)
    mine_file = attach(app, settings, LIN, mine)
    sams_file = attach(app, settings, SAM, other)
    task = open_task(app, mine)
    before = _snapshot(app, mine, task)
    stranger = str(uuid4())
    with pytest.raises(InvalidInput) as raised:
        app.complete_task(LIN, task, {"statement": STATEMENT,
                                      "evidence_files": [mine_file["id"], sams_file["id"], stranger]})
    problems = {p.path: p.message for p in raised.value.problems}
    assert set(problems) == {"$.evidence_files[1]", "$.evidence_files[2]"}
    assert sams_file["id"] in problems["$.evidence_files[1]"]
    assert "not attached" in problems["$.evidence_files[2]"]
    assert _snapshot(app, mine, task) == before


# -- cancelling --------------------------------------------------------------------------------


def test_cancelling_an_instance_cancels_its_open_tasks(
    app: WorkflowService, settings: Any, catalog: tuple[str, str]
) -> None:
    _skill, credential_id = catalog
    instance_id = app.start_instance(LIN, credential_id)
    file = attach(app, settings, LIN, instance_id)
    submit(app, LIN, instance_id, file["id"])
    task = open_task(app, instance_id)
    app.claim_task(ADA, task)
    with pytest.raises(NotFound):  # an assessor may not cancel (or even see) the instance
        app.cancel_instance(ADA, instance_id, "assessors cannot")
    with pytest.raises(NotFound):
        app.cancel_instance(SAM, instance_id, "not mine")
    app.cancel_instance(LIN, instance_id, "moving abroad")
    instance = app.get_instance(instance_id)
    assert instance.status == CANCELLED and instance.open_tasks == []
    assert instance.cancel_reason == "moving abroad"
    cancelled = app.get_task(task)
    assert cancelled.status == TASK_CANCELLED
    assert cancelled.cancel_reason == "the instance was cancelled"
    with pytest.raises(Conflict):
        app.complete_task(ADA, task, {"score": 90, "feedback": "late"})
    with pytest.raises(Conflict):
        app.cancel_instance(ADMIN, instance_id, "again")
    with pytest.raises(Conflict):
        attach(app, settings, LIN, instance_id)


# -- concurrency -------------------------------------------------------------------------------


def test_two_concurrent_claims_exactly_one_wins(
    app: WorkflowService, settings: Any, schema_database: Any, catalog: tuple[str, str]
) -> None:
    _skill, credential_id = catalog
    apps = [bootstrap(settings, database=schema_database) for _ in range(2)]
    try:
        for attempt in range(3):  # several rounds, so the race really happens at least once
            instance_id = app.start_instance(Actor.of(f"learner-{attempt}"), credential_id)
            learner = Actor.of(f"learner-{attempt}")
            file = attach(app, settings, learner, instance_id)
            submit(app, learner, instance_id, file["id"])
            task = open_task(app, instance_id)
            barrier = threading.Barrier(2)
            outcomes: dict[str, object] = {}

            def claim(service: WorkflowService, actor: Actor, barrier=barrier, task=task, outcomes=outcomes) -> None:
                barrier.wait()  # both start together, so both usually decide on the same version
                try:
                    service.claim_task(actor, task)
                    outcomes[actor.user_id] = "won"
                except BaseException as error:  # noqa: BLE001 - reported below
                    outcomes[actor.user_id] = error

            threads = [threading.Thread(target=claim, args=(s, a)) for s, a in zip(apps, (ADA, BEN))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            winners = [user for user, outcome in outcomes.items() if outcome == "won"]
            losers = [outcome for outcome in outcomes.values() if outcome != "won"]
            assert len(winners) == 1, outcomes
            assert len(losers) == 1 and isinstance(losers[0], Conflict), outcomes
            assert app.get_task(task).assignee == winners[0]
            claimed = [e for e in stored_events(app, task) if type(e).__name__ == "Claimed"]
            assert len(claimed) == 1
    finally:
        for service in apps:
            service.close()


# -- reload ------------------------------------------------------------------------------------


def test_a_stored_instance_reloads_to_identical_state(
    app: WorkflowService, settings: Any, schema_database: Any, catalog: tuple[str, str]
) -> None:
    _skill, credential_id = catalog
    instance_id = app.start_instance(LIN, credential_id)
    file = attach(app, settings, LIN, instance_id)
    submit(app, LIN, instance_id, file["id"])
    # the aggregate as a command leaves it, right after save...
    instance = app.get_instance(instance_id)
    instance.attach_file(LIN, {**file, "id": str(uuid4()), "name": "second.txt"})
    app.save_all(instance)
    # ...equals a fresh load, in this process and in another one
    other = bootstrap(settings, database=schema_database)
    try:
        for loaded in (app.get_instance(instance_id), other.get_instance(instance_id)):
            assert loaded.__dict__ == instance.__dict__
        task_id = open_task(app, instance_id)
        assert other.get_task(task_id).__dict__ == app.get_task(task_id).__dict__
    finally:
        other.close()
    assess(app, instance_id, 85)
    finished = app.get_instance(instance_id)
    again = bootstrap(settings, database=schema_database)
    try:
        assert again.get_instance(instance_id).__dict__ == finished.__dict__
    finally:
        again.close()


# -- what cannot start -------------------------------------------------------------------------


def test_a_deleted_credential_starts_nothing_but_running_instances_finish(
    app: WorkflowService, settings: Any, catalog: tuple[str, str]
) -> None:
    _skill, credential_id = catalog
    running = app.start_instance(LIN, credential_id)
    deleted = catalog_event("credential-deleted")["data"]
    assert app.delete_credential(credential_id=deleted["id"], version=deleted["version"], skill_id=deleted["skill_id"])
    with pytest.raises(Conflict, match="deleted"):
        app.start_instance(SAM, credential_id)
    with pytest.raises(Conflict, match="deleted"):  # an admin cannot pin it again either
        app.deploy_definition_version(ADMIN, credential_id, 1)
    with pytest.raises(Conflict, match="deleted"):
        app.start_instance(SAM, credential_id)
    file = attach(app, settings, LIN, running)
    submit(app, LIN, running, file["id"])
    assess(app, running, 85)
    assert app.get_instance(running).result == PASS


def test_a_deleted_skill_starts_nothing(app: WorkflowService, catalog: tuple[str, str]) -> None:
    skill_id, credential_id = catalog
    assert app.delete_skill(skill_id=skill_id, version=3)
    with pytest.raises(Conflict, match="deleted"):
        app.start_instance(SAM, credential_id)


def test_a_retired_deployment_starts_nothing_until_reactivated(app: WorkflowService, catalog: tuple[str, str]) -> None:
    skill_id, credential_id = catalog
    with pytest.raises(NotAllowed):
        app.set_deployment_status(LIN, skill_id, "retired")
    app.set_deployment_status(ADMIN, skill_id, "retired")
    with pytest.raises(Conflict, match="retired"):
        app.start_instance(SAM, credential_id)
    app.set_deployment_status(ADMIN, skill_id, "active")
    assert app.get_instance(app.start_instance(SAM, credential_id)).is_running


def test_an_unknown_credential_is_not_found(app: WorkflowService) -> None:
    with pytest.raises(NotFound):
        app.start_instance(LIN, "no-such-credential")


def test_starting_with_the_same_instance_id_is_idempotent(app: WorkflowService, catalog: tuple[str, str]) -> None:
    _skill, credential_id = catalog
    instance_id = uuid4()
    assert app.start_instance(LIN, credential_id, instance_id) == instance_id
    events = app.recorder.max_notification_id()
    assert app.start_instance(LIN, credential_id, instance_id) == instance_id
    assert app.recorder.max_notification_id() == events
    with pytest.raises(Conflict):
        app.start_instance(SAM, credential_id, instance_id)


# -- catalog events out of order ---------------------------------------------------------------


def _skill(app: WorkflowService, skill_id: str, version: int, name: str = "Welding", status: str = "active") -> bool:
    return app.upsert_skill(skill_id=skill_id, version=version, name=name, description="", status=status)


def _credential(app: WorkflowService, credential_id: str, skill_id: str, version: int, name: str = "Level 1") -> bool:
    return app.upsert_credential(credential_id=credential_id, version=version, skill_id=skill_id, name=name,
                                 description="")


def test_a_credential_before_its_skill_waits_then_starts(app: WorkflowService) -> None:
    assert _credential(app, "cred-a", "skill-a", 1)
    deployment = app.get_deployment("skill-a")
    assert deployment.status == "pending" and "cred-a" in deployment.pins
    with pytest.raises(Conflict, match="pending"):
        app.start_instance(LIN, "cred-a")
    assert _skill(app, "skill-a", 1)
    assert app.get_deployment("skill-a").is_active
    instance = app.get_instance(app.start_instance(LIN, "cred-a"))
    assert instance.skill_id == "skill-a" and instance.is_running


def test_a_delete_before_the_create_leaves_a_tombstone(app: WorkflowService) -> None:
    assert app.delete_skill(skill_id="skill-b", version=3)
    assert app.delete_credential(credential_id="cred-b", version=3, skill_id="skill-b")
    assert not _skill(app, "skill-b", 1)
    assert not _credential(app, "cred-b", "skill-b", 1)
    assert not _credential(app, "cred-b", "skill-b", 4)  # nothing revives a deleted credential
    assert app.get_definition("cred-b").deleted and app.get_deployment("skill-b").deleted
    with pytest.raises(Conflict, match="deleted"):
        app.start_instance(LIN, "cred-b")


def test_a_credential_for_a_deleted_skill_is_kept_but_pins_and_starts_nothing(app: WorkflowService) -> None:
    # Across topics the skill's delete can come first; the credential must still be applied
    # (the consumer would otherwise retry it for ever), and still start nothing.
    assert _skill(app, "skill-e", 1)
    assert app.delete_skill(skill_id="skill-e", version=2)
    assert _credential(app, "cred-e", "skill-e", 1)
    assert app.get_definition("cred-e").skill_id == "skill-e"
    assert app.get_deployment("skill-e").deleted and "cred-e" not in app.get_deployment("skill-e").pins
    with pytest.raises(Conflict, match="deleted"):
        app.start_instance(LIN, "cred-e")


def test_a_credential_moved_to_a_deleted_skill_leaves_its_old_skill_and_starts_nothing(app: WorkflowService) -> None:
    assert _skill(app, "skill-f", 1) and _skill(app, "skill-g", 1)
    assert _credential(app, "cred-f", "skill-f", 1)
    assert app.delete_skill(skill_id="skill-g", version=2)
    assert _credential(app, "cred-f", "skill-g", 2)
    assert "cred-f" not in app.get_deployment("skill-f").pins
    assert "cred-f" not in app.get_deployment("skill-g").pins
    assert app.get_definition("cred-f").skill_id == "skill-g"
    with pytest.raises(Conflict, match="deleted"):
        app.start_instance(LIN, "cred-f")


def test_duplicate_catalog_events_change_nothing(app: WorkflowService) -> None:
    assert _skill(app, "skill-c", 1)
    assert _credential(app, "cred-c", "skill-c", 1)
    before = app.recorder.max_notification_id()
    assert not _skill(app, "skill-c", 1)
    assert not _credential(app, "cred-c", "skill-c", 1)
    assert app.recorder.max_notification_id() == before
    assert app.get_definition("cred-c").latest_version == 1


def test_stale_catalog_events_are_ignored(app: WorkflowService) -> None:
    assert _skill(app, "skill-d", 1, name="v1")
    assert _skill(app, "skill-d", 3, name="v3")
    assert not _skill(app, "skill-d", 2, name="v2", status="retired")
    deployment = app.get_deployment("skill-d")
    assert (deployment.name, deployment.catalog_version, deployment.status) == ("v3", 3, "active")
    assert _credential(app, "cred-d", "skill-d", 2, name="two")
    assert not _credential(app, "cred-d", "skill-d", 1, name="one")
    assert app.get_definition("cred-d").name == "two"
    assert not app.delete_credential(credential_id="cred-d", version=2)
    assert not app.get_definition("cred-d").deleted


def test_a_credential_moving_to_another_skill_moves_its_pin(app: WorkflowService) -> None:
    _skill(app, "skill-e", 1)
    _skill(app, "skill-f", 1)
    _credential(app, "cred-e", "skill-e", 1)
    assert _credential(app, "cred-e", "skill-f", 2)
    assert "cred-e" not in app.get_deployment("skill-e").pins
    assert "cred-e" in app.get_deployment("skill-f").pins
    instance = app.get_instance(app.start_instance(LIN, "cred-e"))
    assert instance.skill_id == "skill-f"


def test_a_start_with_an_id_already_started_answers_that_instance_and_stores_nothing(app: WorkflowService) -> None:
    """The id an Idempotency-Key gives: the second start of it is found by the save (no load
    beforehand), answered with the first instance, and stores no second instance or task."""
    _skill, credential_id = load_example_catalog(app)
    wanted = uuid4()
    assert app.start_instance(LIN, credential_id, wanted) == wanted
    head = app.recorder.max_notification_id()
    assert app.start_instance(LIN, credential_id, wanted) == wanted
    assert app.recorder.max_notification_id() == head  # nothing stored by the repeat
    assert app.get_instance(wanted).version == 1
    with pytest.raises(Conflict, match="already exists for another start"):
        app.start_instance(SAM, credential_id, wanted)
    assert app.recorder.max_notification_id() == head


# -- a definition that fails at run time -------------------------------------------------------


def _deploy(app: WorkflowService, credential_id: str, files: dict[str, bytes]) -> None:
    number = app.upload_definition_version(ADMIN, credential_id, files)
    app.deploy_definition_version(ADMIN, credential_id, number)


@pytest.mark.parametrize(("script", "error"), [
    ("x = {}[1]", "KeyError"),                     # SpiffWorkflow's own message building failed on it
    ("tags = set(['a'])", "is a set"),             # could not be stored: every save failed
    ("due = date.today() + timedelta(days=14)", None),  # needs the import behind date.today
])
def test_a_script_that_fails_at_run_time_fails_the_instance_not_every_request(
    app: WorkflowService, settings: Any, catalog: tuple[str, str], script: str, error: str | None
) -> None:
    from tests.unit.test_bundles import _with_script

    _skill, credential_id = catalog
    _deploy(app, credential_id, _with_script(script))
    instance_id = app.start_instance(LIN, credential_id)
    submit(app, LIN, instance_id, attach(app, settings, LIN, instance_id)["id"])
    instance = app.get_instance(instance_id)
    if error is None:
        assert instance.status == "running" and instance.error is None
    else:
        assert instance.status == "failed", instance.status
        assert error in instance.error


def test_a_timer_expression_that_is_not_a_duration_fails_the_instance_when_it_starts_waiting(
    app: WorkflowService, settings: Any, catalog: tuple[str, str]
) -> None:
    from tests.unit.test_bundles import replaced

    _skill, credential_id = catalog
    _deploy(app, credential_id, replaced('"P14D"', '"14 days"'))
    instance_id = app.start_instance(LIN, credential_id)
    submit(app, LIN, instance_id, attach(app, settings, LIN, instance_id)["id"])
    instance = app.get_instance(instance_id)
    assert instance.status == "failed" and "duration" in instance.error.lower()


def test_a_due_in_too_large_for_a_date_gives_no_due_date(app: WorkflowService) -> None:
    assert app._due_at("P99999999D") is None and app._due_at("PT99999999999H") is None
    assert app._due_at("P2D") is not None
