"""Every stored event class maps, explicitly, to one of the twelve public types; the
CloudEvents mapping is stable and leaks nothing internal."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate

from application.contract import encode, event_id, to_cloudevent
from domain.definition import WorkflowDefinition
from domain.deployment import ACTIVE, WorkflowDeployment
from domain.event_types import EVENT_TYPES, TOPIC_PREFIX
from domain.identity import Actor
from domain.instance import PASS, WorkflowInstance
from domain.task import WorkflowTask

AGGREGATES = (WorkflowDefinition, WorkflowDeployment, WorkflowInstance, WorkflowTask)
ENTITY = {WorkflowDefinition: "DEFINITION", WorkflowDeployment: "DEPLOYMENT",
          WorkflowInstance: "INSTANCE", WorkflowTask: "TASK"}


def event_classes(aggregate: type) -> list[type]:
    return [
        value for name, value in vars(aggregate).items()
        if isinstance(value, type) and issubclass(value, CanMutateAggregate) and not name.startswith("_")
    ]


ALL = [(aggregate, cls) for aggregate in AGGREGATES for cls in event_classes(aggregate)]


def test_the_walk_finds_the_event_classes() -> None:
    names = {(a.__name__, c.__name__) for a, c in ALL}
    assert ("WorkflowTask", "Claimed") in names
    assert ("WorkflowInstance", "Completed") in names
    assert ("WorkflowDefinition", "VersionAdded") in names
    assert ("WorkflowDeployment", "DefinitionPinned") in names
    assert len(ALL) >= 25


@pytest.mark.parametrize(("aggregate", "cls"), ALL, ids=[f"{a.__name__}.{c.__name__}" for a, c in ALL])
def test_each_event_class_declares_its_own_topic_and_type(aggregate: type, cls: type) -> None:
    assert "TOPIC" in cls.__dict__ or any(
        "TOPIC" in base.__dict__ and base.__qualname__ == cls.__qualname__ for base in cls.__mro__
    ), f"{cls.__qualname__} inherits its TOPIC"
    assert cls.TOPIC.startswith(TOPIC_PREFIX)
    assert cls.TOPIC.endswith(f".{cls.__name__}")
    assert cls.EVENT_TYPE in EVENT_TYPES
    assert ENTITY[aggregate] in cls.EVENT_TYPE


def test_topics_are_unique() -> None:
    topics = [cls.TOPIC for _a, cls in ALL] + [a.TOPIC for a in AGGREGATES]
    assert len(topics) == len(set(topics))


def test_created_and_deleted_events_map_to_created_and_deleted_types() -> None:
    for _aggregate, cls in ALL:
        if cls.__name__ in ("Created", "Started"):
            assert cls.EVENT_TYPE.endswith("_CREATED"), cls.__qualname__
        elif cls.__name__ == "Deleted":
            assert cls.EVENT_TYPE.endswith("_DELETED"), cls.__qualname__
        else:
            assert cls.EVENT_TYPE.endswith("_UPDATED"), cls.__qualname__


def test_all_twelve_types_are_used() -> None:
    assert len(EVENT_TYPES) == 12
    assert {cls.EVENT_TYPE for _a, cls in ALL} == EVENT_TYPES


def test_stored_topics_resolve_to_the_event_classes() -> None:
    # eventsourcing resolves a stored topic through the class's TOPIC registration.
    from eventsourcing.utils import resolve_topic

    for _aggregate, cls in ALL:
        if cls.__name__ == "Event":
            continue  # the abstract base of each aggregate: never stored, never registered
        assert resolve_topic(cls.TOPIC) is cls, cls.__qualname__


# -- CloudEvents mapping ---------------------------------------------------------------------


def _instance_life() -> tuple[WorkflowInstance, list]:
    instance = WorkflowInstance(
        id=uuid4(), user_id="lin", user_email="lin@example.org", credential_id="cred", skill_id="skill",
        definition_id=uuid4(), definition_version=1, engine_state={"data": {"secret": 1}},
        opened_tasks=[uuid4()], messages=[], timers=[],
    )
    file = {"id": str(uuid4()), "name": "weld.txt", "media_type": "text/plain", "size": 3, "sha256": "ab" * 32}
    instance.attach_file(Actor.of("lin"), file)
    instance.advance(cause="task_completed", cause_id=None, engine_state={"data": {"secret": 2}},
                     opened_tasks=[], closed_tasks=list(instance.open_tasks), messages=[], timers=[])
    instance.complete(result=PASS, end_element_id="end_passed", evidence=[file])
    return instance, instance.collect_events()


def _replayed(events: list) -> list:
    """(event, aggregate right after it) pairs."""
    out, aggregate = [], None
    for e in events:
        aggregate = e.mutate(aggregate)
        out.append((e, _snapshot(aggregate)))
    return out


def _snapshot(aggregate):
    import copy

    return copy.deepcopy(aggregate)


def test_cloudevents_have_stable_ids_subjects_and_types() -> None:
    instance, events = _instance_life()
    pairs = _replayed(events)
    first = [to_cloudevent(e, after, n) for n, (e, after) in enumerate(pairs, 1)]
    again = [to_cloudevent(e, after, n) for n, (e, after) in enumerate(pairs, 1)]
    assert [c.id for c in first] == [c.id for c in again]
    assert len({c.id for c in first}) == len(first)
    assert first[0].id == event_id(instance.id, 1)
    UUID(first[0].id)
    for cloudevent, (e, _after) in zip(first, pairs):
        assert cloudevent.specversion == "1.0"
        assert cloudevent.source == "/skillbase/workflow"
        assert cloudevent.subject == f"instance/{instance.id}"
        assert cloudevent.type == type(e).EVENT_TYPE
        assert cloudevent.time == e.timestamp.isoformat()
    assert [c.type for c in first] == [
        "SKILLBASE_WORKFLOW_INSTANCE_CREATED"] + ["SKILLBASE_WORKFLOW_INSTANCE_UPDATED"] * 3


def test_cloudevent_data_holds_state_and_change_but_no_internals() -> None:
    _instance, events = _instance_life()
    for e, after in _replayed(events):
        cloudevent = to_cloudevent(e, after)
        text = encode(cloudevent).decode()
        body = json.loads(text)
        assert body["data"]["change"]["fact"] == type(e).__name__
        assert body["data"]["state"]["version"] == e.originator_version
        assert "engine_state" not in text
        assert "user_email" not in text
        assert "lin@example.org" not in text
        assert "secret" not in text


def test_the_pass_completed_event_carries_the_achievement_and_evidence() -> None:
    instance, events = _instance_life()
    completed, after = _replayed(events)[-1]
    body = to_cloudevent(completed, after).data
    achievement = body["achievement"]
    (file,) = instance.files.values()
    assert achievement["user_id"] == "lin"
    assert achievement["credential_id"] == "cred" and achievement["skill_id"] == "skill"
    assert achievement["instance_id"] == str(instance.id)
    assert achievement["completed_at"] == completed.timestamp.isoformat()
    assert achievement["result"][0]["value"] == PASS
    (evidence,) = achievement["evidence"]
    assert evidence["id"] == f"urn:skillbase:file:{file['id']}"
    assert evidence["sha256"] == file["sha256"]
    assert evidence["name"] == "weld.txt" and evidence["media_type"] == "text/plain"


def test_definition_events_leak_no_spec_or_file_contents() -> None:
    definition = WorkflowDefinition(credential_id="c", skill_id="s", name="n", description="", catalog_version=1)
    definition.add_version(process_id="p", files={"p.bpmn": "<SECRET-BPMN/>"}, sha256="x",
                           spec_state={"spec": "SPEC-STATE"}, engine_format="f", added_by="root")
    for e, after in _replayed(definition.collect_events()):
        cloudevent = to_cloudevent(e, after)
        text = encode(cloudevent).decode()
        assert cloudevent.subject == f"definition/{definition.id}"
        assert "SECRET-BPMN" not in text and "SPEC-STATE" not in text
    assert json.loads(text)["data"]["change"]["files"] == ["p.bpmn"]


def test_deployment_and_task_subjects() -> None:
    deployment = WorkflowDeployment(skill_id="s", name="n", description="", status=ACTIVE, catalog_version=1)
    (created,) = deployment.collect_events()
    assert to_cloudevent(created, deployment).subject == f"deployment/{deployment.id}"
    task = WorkflowTask(
        id=uuid4(), instance_id=uuid4(), learner_id="lin", credential_id="c", skill_id="s", engine_task_id="e",
        element_id="x", name="X", kind="user", candidate_group=None, assignee="lin", form=None,
        documentation="", due_at=None,
    )
    (created,) = task.collect_events()
    assert to_cloudevent(created, task).subject == f"task/{task.id}"
    assert to_cloudevent(created, task).type == "SKILLBASE_WORKFLOW_TASK_CREATED"


def test_a_failure_is_published_by_its_kind_never_its_message() -> None:
    """Python's messages quote values: a script's literal (a key it should not hold) or the
    learner's data went to every consumer of the topic."""
    running = WorkflowInstance(
        id=uuid4(), user_id="lin", user_email="lin@example.org", credential_id="cred", skill_id="skill",
        definition_id=uuid4(), definition_version=1, engine_state={}, opened_tasks=[], messages=[], timers=[],
    )
    running.collect_events()
    running.fail(element_id="compute", error="ValueError: invalid literal for int() with base 10: 'sk-live-TOPSECRET'")
    (failed,) = running.collect_events()
    body = json.loads(encode(to_cloudevent(failed, running)).decode())
    assert "TOPSECRET" not in json.dumps(body)
    assert body["data"]["change"]["error"] == body["data"]["state"]["error"] == "ValueError"
    assert body["data"]["change"]["element_id"] == "compute"
    assert running.error.endswith("'sk-live-TOPSECRET'")  # kept in the store, for admins


def test_a_thrown_message_is_published_by_its_name_and_template_never_its_payload() -> None:
    instance = WorkflowInstance(
        id=uuid4(), user_id="lin", user_email="lin@example.org", credential_id="cred", skill_id="skill",
        definition_id=uuid4(), definition_version=1, engine_state={}, opened_tasks=[],
        messages=[{"name": "email", "payload": {"template": "evidence_submitted", "to": "jane@example.org"},
                   "correlations": {"ref": "r-1"}},
                  {"name": "notify", "payload": {"reference": "private-42"}, "correlations": {}}],
        timers=[],
    )
    (started,) = instance.collect_events()
    body = json.loads(encode(to_cloudevent(started, instance)).decode())
    assert body["data"]["change"]["messages"] == [{"name": "email", "template": "evidence_submitted"},
                                                  {"name": "notify"}]
    text = json.dumps(body)
    assert "jane@example.org" not in text and "private-42" not in text and "r-1" not in text
