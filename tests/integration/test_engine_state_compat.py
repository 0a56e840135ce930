"""Stored instances stay loadable when the code changes.

The JSON files in ``tests/fixtures/engine_state/`` are what the event store held for an
instance of the example credential waiting for its assessment (written once by
``make_fixture.py``; never regenerated). The current engine restores them and runs the
process to its end.
"""

from __future__ import annotations

import copy
import inspect
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from application.engine.runner import Engine, SpecRef, Step
from application.engine.serializer import ENGINE_FORMAT
from domain.definition import WorkflowDefinition
from domain.errors import Conflict
from domain.instance import WorkflowInstance

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine_state"


NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def call(method: Any, *args: Any) -> Any:
    """Calls an Engine method, giving it the application's clock where it takes one.

    (The engine is gaining an explicit ``now``; this keeps the fixture test independent of
    whether the working tree has that change yet.)"""
    if "now" in inspect.signature(method).parameters:
        return method(*args, now=NOW)
    return method(*args)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def stored() -> tuple[SpecRef, dict[str, Any]]:
    definition = load("definition_v1.json")
    instance = load("instance_awaiting_assessment.json")
    ref = SpecRef(("fixture", "definition_v1"), definition["spec_state"], definition["engine_format"])
    return ref, instance


def complete(engine: Engine, ref: SpecRef, state: dict[str, Any], fmt: str, task_id: str, data: dict) -> Step:
    step = call(engine.complete_task, ref, state, fmt, task_id, data)
    assert step.error is None, step.error
    return step


def test_the_fixtures_are_the_stored_event_payloads() -> None:
    definition = load("definition_v1.json")
    instance = load("instance_awaiting_assessment.json")
    # the topics they were stored under still resolve to the current event classes
    assert definition["topic"] == WorkflowDefinition.VersionAdded.TOPIC
    assert instance["topic"] == WorkflowInstance.Advanced.TOPIC
    assert definition["process_id"] == "credential_assessment"
    assert instance["ready_element_id"] == "assess_evidence"
    assert "spec" in definition["spec_state"] and "tasks" in instance["engine_state"]
    # kept in stored order: SpiffWorkflow rebuilds a task's data from its parent's
    seen: set[str] = set()
    for task_id, task in instance["engine_state"]["tasks"].items():
        assert task["parent"] is None or task["parent"] in seen, "a child is listed before its parent"
        seen.add(task_id)


@pytest.mark.parametrize(
    ("score", "outcome", "end", "email"),
    [(85, "pass", "end_passed", "credential_passed"), (40, "fail", "end_failed", "credential_failed")],
)
def test_a_stored_instance_runs_to_its_end_with_the_current_code(
    stored: tuple[SpecRef, dict[str, Any]], score: int, outcome: str, end: str, email: str
) -> None:
    ref, instance = stored
    fmt = instance["engine_format"]
    state = copy.deepcopy(instance["engine_state"])
    engine = Engine()

    after_assess = complete(engine, ref, state, fmt, instance["ready_engine_task_id"],
                            {"score": score, "feedback": "Reviewed."})
    assert state == instance["engine_state"], "restoring must not change the stored state"
    assert not after_assess.finished
    (observe,) = after_assess.ready
    assert (observe.element_id, observe.kind, observe.lane) == ("observe_demonstration", "manual", "Assessor")
    assert after_assess.timers == []  # the deadline was withdrawn with the assessment

    done = complete(engine, ref, after_assess.engine_state, ENGINE_FORMAT, observe.engine_task_id, {})
    assert done.finished
    assert done.outcome == outcome
    assert done.end_element_id == end
    assert done.ready == []
    assert [m["payload"]["template"] for m in done.messages if m["name"] == "email"] == [email]
    # the learner's submission, stored before the code changed, is still the process data
    assert done.data["score"] == score
    assert done.data["evidence_files"] == ["0f5c2d3e-4b6a-4c8d-9e0f-1a2b3c4d5e6f"]


def test_the_stored_deadline_is_still_understood(stored: tuple[SpecRef, dict[str, Any]]) -> None:
    ref, instance = stored
    state = copy.deepcopy(instance["engine_state"])
    (deadline,) = [t for t in state["tasks"].values() if t["task_spec"] == "assessment_deadline"]
    engine = Engine()

    fmt = instance["engine_format"]

    deadline["internal_data"]["event_value"] = "2999-01-01T00:00:00+00:00"
    waiting = call(engine.refresh, ref, state, fmt)
    assert not waiting.finished
    assert [t.element_id for t in waiting.ready] == ["assess_evidence"]
    assert [(t["element_id"], t["engine_task_id"]) for t in waiting.timers] == [
        ("assessment_deadline", deadline["id"])
    ]

    deadline["internal_data"]["event_value"] = "2000-01-01T00:00:00+00:00"
    if hasattr(engine, "fire_timer"):  # timers fire when the scheduler says so
        expired = call(engine.fire_timer, ref, state, fmt, deadline["id"])
    else:  # timers fire on refresh once due
        expired = call(engine.refresh, ref, state, fmt)
    assert expired.finished and expired.outcome == "fail" and expired.end_element_id == "end_expired"


def test_a_task_the_engine_is_not_waiting_for_is_a_conflict(stored: tuple[SpecRef, dict[str, Any]]) -> None:
    ref, instance = stored
    state = instance["engine_state"]
    (submitted,) = [tid for tid, t in state["tasks"].items() if t["task_spec"] == "submit_evidence"]
    with pytest.raises(Conflict):
        call(Engine().complete_task, ref, state, instance["engine_format"], submitted, {})


def test_a_stored_state_with_its_tasks_reordered_still_keeps_its_data(
    stored: tuple[SpecRef, dict[str, Any]],
) -> None:
    """A state whose task order was lost (sorted keys, as jsonb or a re-encode would give)
    still runs to its end with the learner's submission: restore orders tasks itself."""
    ref, instance = stored
    state = json.loads(json.dumps(instance["engine_state"], sort_keys=True))
    state["tasks"] = dict(reversed(list(state["tasks"].items())))
    engine = Engine()
    after_assess = complete(engine, ref, state, instance["engine_format"], instance["ready_engine_task_id"],
                            {"score": 85, "feedback": "Reviewed."})
    (observe,) = after_assess.ready
    done = complete(engine, ref, after_assess.engine_state, ENGINE_FORMAT, observe.engine_task_id, {})
    assert done.outcome == "pass"
    assert done.data["evidence_files"] == ["0f5c2d3e-4b6a-4c8d-9e0f-1a2b3c4d5e6f"]


def test_the_state_written_now_has_the_stored_layout_and_no_spec(stored: tuple[SpecRef, dict[str, Any]]) -> None:
    """A step writes the workflow's own state with the keys a stored state has, in the
    same order, and never the spec (stored once per definition version, not per event)."""
    ref, instance = stored
    step = complete(Engine(), ref, instance["engine_state"], instance["engine_format"],
                    instance["ready_engine_task_id"], {"score": 85, "feedback": "Reviewed."})
    assert list(step.engine_state) == list(instance["engine_state"])
    assert "spec" not in step.engine_state and "subprocess_specs" not in step.engine_state
