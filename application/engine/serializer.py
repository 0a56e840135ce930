"""SpiffWorkflow state to and from plain JSON-able dicts.

The spec of a definition version is serialized once, into the definition's event
(``spec_state``); each instance event carries only the workflow's own state
(``engine_state``), without the spec. ``ENGINE_FORMAT`` records the serializer version
so a stored state written by an older SpiffWorkflow can be migrated on load.

SpiffWorkflow's restore consumes the dicts it is given, so everything restored here is a
private copy: stored state that other code holds is never changed.
"""

from __future__ import annotations

from typing import Any

import msgspec
from SpiffWorkflow.bpmn.serializer.default.event_definition import TimerConditionalEventDefinitionConverter
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from application.engine.clock import CLOCKED_TIMERS


class _StateOnlyConverter(BpmnWorkflowConverter):
    """A workflow's own state, without its spec and subprocess specs.

    SpiffWorkflow's converter serializes the whole spec into every workflow dict; here the
    spec is stored once per definition version and restored objects are reused, so it
    would only be thrown away again (it was ~40 % of each ``engine_state``). The keys
    written are otherwise SpiffWorkflow's own, in its order.
    """

    def to_dict(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct


# The clocked timers (application/engine/clock.py) share SpiffWorkflow's class names and
# are registered last, so every restored spec runs on the application's clock.
_CONFIG = {
    **SPIFF_CONFIG,
    **{cls: TimerConditionalEventDefinitionConverter for cls in CLOCKED_TIMERS},
    BpmnWorkflow: _StateOnlyConverter,
}
_SERIALIZER = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(_CONFIG))
ENGINE_FORMAT = f"spiff-bpmn/{_SERIALIZER.VERSION}"


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(value))


def spec_state(spec: Any, subprocess_specs: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": _SERIALIZER.to_dict(spec),
        "subprocess_specs": {name: _SERIALIZER.to_dict(s) for name, s in subprocess_specs.items()},
    }


def restore_spec(spec: dict[str, Any], engine_format: str) -> tuple[Any, dict[str, Any]]:
    """The spec objects of a version, restored from a copy of its stored spec."""
    spec = _copy(spec)
    if engine_format != ENGINE_FORMAT:
        spec = _migrated(spec, engine_format)
    return (
        _SERIALIZER.from_dict(spec["spec"]),
        {name: _SERIALIZER.from_dict(s) for name, s in spec["subprocess_specs"].items()},
    )


def engine_state(workflow: BpmnWorkflow) -> dict[str, Any]:
    return _SERIALIZER.to_dict(workflow)


def restore(specs: tuple[Any, dict[str, Any]], state: dict[str, Any], engine_format: str) -> BpmnWorkflow:
    """Rebuilds a workflow around already restored spec objects and a stored state.

    SpiffWorkflow's registry passes objects that are not dicts through unchanged, so the
    spec objects are reused rather than rebuilt for every step.
    """
    whole = _copy(state)
    if engine_format != ENGINE_FORMAT:
        whole = _migrated(whole, engine_format)
    _parents_first(whole)
    for subprocess in whole.get("subprocesses", {}).values():
        _parents_first(subprocess)
    whole["spec"], whole["subprocess_specs"] = specs
    return _SERIALIZER.from_dict(whole)


def _parents_first(workflow: dict[str, Any]) -> None:
    """Orders ``tasks`` root first, each parent before its children.

    SpiffWorkflow rebuilds a task's data from its parent's while restoring, in the order of
    the ``tasks`` mapping: restored out of order, form data silently vanishes. JSON keeps the
    order it was written in, but nothing about a stored state should depend on key order.
    """
    tasks = workflow.get("tasks")
    root = workflow.get("root")
    if not tasks or root not in tasks:
        return
    ordered, queue = {}, [root]
    while queue:
        task_id = queue.pop(0)
        if task_id in ordered or task_id not in tasks:
            continue
        ordered[task_id] = tasks[task_id]
        queue.extend(tasks[task_id].get("children", []))
    ordered.update((task_id, task) for task_id, task in tasks.items() if task_id not in ordered)
    workflow["tasks"] = ordered


def _migrated(dct: dict[str, Any], engine_format: str) -> dict[str, Any]:
    dct[_SERIALIZER.VERSION_KEY] = engine_format.rpartition("/")[2]
    _SERIALIZER.migrate(dct)
    return dct
