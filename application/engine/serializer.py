"""SpiffWorkflow state to and from plain JSON-able dicts.

The spec of a definition version is serialized once, into the definition's event
(``spec_state``); each instance event carries only the workflow's own state
(``engine_state``), without the spec. ``ENGINE_FORMAT`` records the serializer version
so a stored state written by an older SpiffWorkflow can be migrated on load.

SpiffWorkflow's restore consumes the dicts it is given, so everything restored here is a
private copy: stored state that other code holds is never changed.

SpiffWorkflow's restore also turns any dict with a ``typename`` key into an object of that
registered class, wherever it is, and a ``BpmnWorkflow`` comes back with the library's
unrestricted script engine. Task data, workflow data and event payloads hold what scripts,
forms and messages wrote: a learner's ``{"typename": "…"}`` or a script's copy of a workflow
dict would come back as an object (ADR 0003, amendment). So inside data only the value types
SpiffWorkflow itself keeps there are revived (``DATA_TYPENAMES``); any other ``typename``
dict stays a dict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from SpiffWorkflow.bpmn.serializer.default.event_definition import TimerConditionalEventDefinitionConverter
from SpiffWorkflow.bpmn.serializer.default.workflow import (
    BpmnSubWorkflowConverter,
    BpmnWorkflowConverter,
    TaskConverter,
    WorkflowConverter,
)
from SpiffWorkflow.bpmn.serializer.helpers.registry import DefaultRegistry
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.event_definitions.base import EventDefinition
from SpiffWorkflow.bpmn.util.event import BpmnEvent
from SpiffWorkflow.bpmn.util.subworkflow import BpmnSubWorkflow
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.task import Task

from application.engine.clock import CLOCKED_TIMERS


_restoring = threading.local()


@contextmanager
def _data() -> Iterator[None]:
    """While restoring data (task, workflow and event data) in this thread."""
    depth = getattr(_restoring, "data", 0)
    _restoring.data = depth + 1
    try:
        yield
    finally:
        _restoring.data = depth


class _Registry(DefaultRegistry):
    """SpiffWorkflow's registry; inside data (``_data``) it revives only ``DATA_TYPENAMES``."""

    data_typenames: frozenset[str] = frozenset()

    def restore(self, val: Any, **kwargs: Any) -> Any:
        if (type(val) is dict and "typename" in val and getattr(_restoring, "data", 0)
                and val["typename"] not in self.data_typenames):
            return {key: self.restore(item, **kwargs) for key, item in val.items()}
        return super().restore(val, **kwargs)


class _TaskConverter(TaskConverter):
    """A task's data, delta and internal data are data (internal data holds message
    payloads and multi-instance items beside the library's own events)."""

    def from_dict(self, dct: dict[str, Any], workflow: Any) -> Any:
        with _data():
            return super().from_dict(dct, workflow)


class _SubWorkflowConverter(BpmnSubWorkflowConverter):
    def set_default_attributes(self, workflow: Any, dct: dict[str, Any]) -> None:
        with _data():
            super().set_default_attributes(workflow, dct)


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

    def from_dict(self, dct: dict[str, Any]) -> BpmnWorkflow:
        events = dct.pop("bpmn_events", [])  # thrown events: their payloads are data
        workflow = super().from_dict(dct)
        with _data():
            workflow.bpmn_events = self.registry.restore(events)
        return workflow

    def set_default_attributes(self, workflow: Any, dct: dict[str, Any]) -> None:
        with _data():
            super().set_default_attributes(workflow, dct)


# The clocked timers (application/engine/clock.py) share SpiffWorkflow's class names and
# are registered last, so every restored spec runs on the application's clock.
_CONFIG = {
    **SPIFF_CONFIG,
    **{cls: TimerConditionalEventDefinitionConverter for cls in CLOCKED_TIMERS},
    BpmnWorkflow: _StateOnlyConverter,
    BpmnSubWorkflow: _SubWorkflowConverter,
    Task: _TaskConverter,
}
_REGISTRY = BpmnWorkflowSerializer.configure(_CONFIG, _Registry())
# What SpiffWorkflow itself keeps in data: values (ids, times), events and their definitions.
_REGISTRY.data_typenames = frozenset(
    name for cls, name in _REGISTRY.typenames.items()
    if cls in (UUID, datetime, timedelta, BpmnEvent) or issubclass(cls, EventDefinition)
)
DATA_TYPENAMES = _REGISTRY.data_typenames
_SERIALIZER = BpmnWorkflowSerializer(_REGISTRY)
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
