"""A stored instance state brings back data as data: SpiffWorkflow's restore turns any dict
with a ``typename`` key into an object of that class, and a revived ``BpmnWorkflow`` carries
the library's unrestricted script engine (found in review: a bundle ran any code through it,
and a learner's message payload made an instance unloadable)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter

from application.engine import serializer
from application.engine.builtin_templates import load_template
from application.engine.bundle import validate_bundle
from application.engine.runner import Engine, SpecRef

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ref() -> SpecRef:
    bundle = validate_bundle(load_template("credential-assessment"), max_bytes=1024 * 1024)
    return SpecRef(("test", 1), bundle.spec_state, bundle.engine_format)


def a_workflow_dict(ref: SpecRef) -> dict[str, Any]:
    """What a script could build by hand: SpiffWorkflow's own dict of a whole workflow."""
    spec, subprocess_specs = serializer.restore_spec(ref.spec_state, ref.engine_format)
    whole = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure({**serializer._CONFIG,
                                                                     BpmnWorkflow: BpmnWorkflowConverter}))
    return whole.to_dict(BpmnWorkflow(spec, subprocess_specs))


def with_data(state: dict[str, Any], **data: Any) -> dict[str, Any]:
    """The state with ``data`` in every task's data, delta and internal data, and the workflow's."""
    for task in state["tasks"].values():
        task["data"] = {**task.get("data", {}), **data}
        if task.get("delta"):
            task["delta"]["updates"] = {**task["delta"].get("updates", {}), **data}
        task["internal_data"] = {**task.get("internal_data", {}), **data}
    state["data"] = {**state.get("data", {}), **data}
    return state


@pytest.mark.parametrize("kind", ["workflow", "unknown", "task"])
def test_objects_written_as_data_come_back_as_plain_data(ref: SpecRef, kind: str) -> None:
    engine = Engine()
    step = engine.start(ref, {}, now=NOW)
    hostile = {"workflow": a_workflow_dict(ref), "unknown": {"typename": "nope", "x": 1},
               "task": {"typename": "Task", "id": str(uuid.uuid4())}}[kind]
    state = with_data(step.engine_state, value=hostile)

    workflow = serializer.restore(engine._specs.get(ref.key, ref.spec_state, ref.engine_format), state,
                                  ref.engine_format)

    datas = [workflow.data] + [task.data for task in workflow.tasks.values()] + \
        [task.internal_data for task in workflow.tasks.values()]
    assert all(type(data["value"]) is dict and data["value"]["typename"] == hostile["typename"] for data in datas)


def test_an_instance_whose_data_looks_like_an_object_still_runs(ref: SpecRef) -> None:
    """Was a TypeError ('NoneType' object is not callable) on every later step: a 500 on
    every request of that instance."""
    engine = Engine()
    step = engine.start(ref, {}, now=NOW)
    state = with_data(step.engine_state, note={"typename": "nope"})
    submit = step.ready[0].engine_task_id
    after = engine.complete_task(ref, state, ref.engine_format, submit,
                                 {"statement": "x" * 20, "evidence_files": [str(uuid.uuid4())]}, now=NOW)
    assert after.error is None and after.ready


def test_what_spiffworkflow_keeps_in_data_is_still_revived() -> None:
    assert {"UUID", "datetime", "timedelta", "BpmnEvent", "MessageEventDefinition"} <= serializer.DATA_TYPENAMES
    assert not {"BpmnWorkflow", "BpmnSubWorkflow", "Task", "ScriptTask"} & serializer.DATA_TYPENAMES
