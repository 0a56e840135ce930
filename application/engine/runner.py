"""Runs SpiffWorkflow for one step and reports what happened as plain facts.

The application calls the runner while *deciding* a command; the facts (``Step``) are
then recorded in events. Nothing here runs on replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.util import BpmnEvent
from SpiffWorkflow.bpmn.specs.mixins.events.end_event import EndEvent
from SpiffWorkflow.bpmn.specs.mixins.manual_task import ManualTask
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.util.task import TaskState

from application.engine import serializer
from application.engine.clock import engine_clock, fire
from application.engine.conventions import FORM_PROPERTY, properties
from application.engine.scripts import lenient, restricted_script_engine
from application.engine.spec_cache import SpecCache
from domain.errors import Conflict
from domain.instance import FAIL

LEARNER_LANE = "learner"


@dataclass(frozen=True)
class SpecRef:
    """Which definition version to run: ``key`` identifies it for the spec cache."""

    key: object
    spec_state: dict[str, Any]
    engine_format: str


@dataclass(frozen=True)
class ReadyTask:
    engine_task_id: str
    element_id: str
    name: str
    kind: str
    lane: str | None
    form: str | None
    documentation: str
    due_in: str | None


@dataclass(frozen=True)
class Step:
    engine_state: dict[str, Any]
    ready: list[ReadyTask]
    messages: list[dict[str, Any]]
    timers: list[dict[str, Any]]
    finished: bool = False
    outcome: str | None = None
    end_element_id: str | None = None
    error: str | None = None
    error_element_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def ready_ids(self) -> set[str]:
        return {task.engine_task_id for task in self.ready}


class Engine:
    """Starts and advances workflows of stored definition versions."""

    def __init__(self, script_timeout: float = 1.0, spec_cache: SpecCache | None = None) -> None:
        self._script_timeout = script_timeout
        self._specs = spec_cache or SpecCache()

    # Every step runs under ``engine_clock(now)``: timers that start waiting take their due
    # time from ``now`` (the application's clock), and none fires unless ``fire_timer``
    # says so (application/engine/clock.py).

    def start(self, ref: SpecRef, data: dict[str, Any], *, now: datetime) -> Step:
        with engine_clock(now):
            spec, subprocess_specs = self._specs.get(ref.key, ref.spec_state, ref.engine_format)
            workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=self._script_engine())
            workflow.data.update(data)
            start = workflow.get_tasks(state=TaskState.READY)
            for task in start:
                task.data.update(data)
            return self._run(workflow)

    def complete_task(
        self, ref: SpecRef, state: dict[str, Any], engine_format: str, engine_task_id: str, data: dict[str, Any],
        *, now: datetime,
    ) -> Step:
        with engine_clock(now):
            workflow = self._restore(ref, state, engine_format)
            task = workflow.get_task_from_id(UUID(engine_task_id))
            if task is None or task.state != TaskState.READY:
                raise Conflict(f"the engine is not waiting for task {engine_task_id}")
            task.data.update(data)
            try:
                task.run()
            except Exception as error:  # noqa: BLE001 - see _run: the definition's fault
                return self._failed(workflow, error)
            return self._run(workflow)

    def refresh(self, ref: SpecRef, state: dict[str, Any], engine_format: str, *, now: datetime) -> Step:
        """Runs what is ready; no timer fires here (see ``fire_timer``)."""
        with engine_clock(now):
            return self._run(self._restore(ref, state, engine_format))

    def fire_timer(
        self, ref: SpecRef, state: dict[str, Any], engine_format: str, engine_task_id: str, *, now: datetime
    ) -> Step | None:
        """Fires one waiting timer and runs what follows; None if it is not waiting."""
        with engine_clock(now):
            workflow = self._restore(ref, state, engine_format)
            task = workflow.get_task_from_id(UUID(engine_task_id))
            definition = getattr(getattr(task, "task_spec", None), "event_definition", None)
            if task is None or task.state != TaskState.WAITING or not isinstance(definition, TimerEventDefinition):
                return None
            try:
                fire(task)
            except Exception as error:  # noqa: BLE001 - see _run: the definition's fault
                return self._failed(workflow, error)
            return self._run(workflow)

    def deliver_message(
        self, ref: SpecRef, state: dict[str, Any], engine_format: str, name: str, payload: Any,
        correlations: dict[str, Any], *, now: datetime,
    ) -> Step | None:
        """Hands a named message to the task waiting for it; None if none is waiting."""
        with engine_clock(now):
            workflow = self._restore(ref, state, engine_format)
            waiting = [task for task in _message_waits(workflow) if task.task_spec.event_definition.name == name]
            if not waiting:
                return None
            # Routing (instance id, correlation keys) was done by the application: the event
            # carries the waiting workflow's own correlations so SpiffWorkflow matches it.
            task = waiting[0]
            correlations = correlations or dict(task.workflow.correlations or {})
            event = BpmnEvent(task.task_spec.event_definition, payload=payload, correlations=correlations)
            try:
                workflow.send_event(event)
            except Exception as error:  # noqa: BLE001 - see _run: the definition's fault
                return self._failed(workflow, error)
            return self._run(workflow)

    def waiting_messages(self, ref: SpecRef, state: dict[str, Any], engine_format: str) -> list[dict[str, Any]]:
        """The messages a workflow waits for: name, engine task id, correlations so far."""
        workflow = self._restore(ref, state, engine_format)
        return [
            {
                "name": task.task_spec.event_definition.name,
                "engine_task_id": str(task.id),
                "element_id": task.task_spec.bpmn_id,
                "correlations": dict(task.workflow.correlations or {}),
            }
            for task in _message_waits(workflow)
        ]

    def element_properties(self, ref: SpecRef, element_id: str) -> dict[str, str]:
        """The ``spiffworkflow:properties`` of one element of a definition version."""
        spec, subprocess_specs = self._specs.get(ref.key, ref.spec_state, ref.engine_format)
        for process in (spec, *subprocess_specs.values()):
            for task_spec in process.task_specs.values():
                if getattr(task_spec, "bpmn_id", None) == element_id:
                    return dict(properties(task_spec))
        return {}

    def _restore(self, ref: SpecRef, state: dict[str, Any], engine_format: str) -> BpmnWorkflow:
        specs = self._specs.get(ref.key, ref.spec_state, ref.engine_format)
        workflow = serializer.restore(specs, state, engine_format)
        workflow.script_engine = self._script_engine()
        return workflow

    def _script_engine(self) -> Any:
        return restricted_script_engine(timeout=self._script_timeout)

    def _run(self, workflow: BpmnWorkflow) -> Step:
        # Whatever a running definition raises — SpiffWorkflow's own errors, and those it lets
        # through from a script (a KeyError(1) turns into a TypeError inside its message), a
        # timer expression that is not a date or duration, a multi-instance count that is not
        # a number — is the definition's fault: the instance fails with it, as an incident an
        # admin sees, rather than every request on it answering 500 for ever.
        try:
            workflow.do_engine_steps()
            workflow.refresh_timers()
            workflow.do_engine_steps()
            return self._facts(workflow)
        except Exception as error:  # noqa: BLE001
            return self._failed(workflow, error)

    def _facts(self, workflow: BpmnWorkflow) -> Step:
        messages = [_message(event) for event in workflow.get_events() if _is_message(event)]
        # SpiffWorkflow keeps a message's correlation values in the workflow as they came (a
        # date): stored with the state, they failed every save. Kept as the message keeps them.
        workflow.correlations = lenient(dict(workflow.correlations or {}))
        finished = workflow.is_completed()
        end = _end_event(workflow) if finished else None
        return Step(
            engine_state=serializer.engine_state(workflow),
            ready=[_ready(task) for task in workflow.get_tasks(state=TaskState.READY, manual=True)],
            messages=messages,
            timers=_timers(workflow),
            finished=finished,
            outcome=properties(end.task_spec).get("outcome") if end else None,
            end_element_id=end.task_spec.bpmn_id if end else None,
            data=dict(workflow.data) if finished else {},
        )

    def _failed(self, workflow: BpmnWorkflow, error: Exception) -> Step:
        task = getattr(error, "task", None)
        text = str(error).splitlines()[0] if str(error) else ""
        if not isinstance(error, SpiffWorkflowException):
            text = f"{type(error).__name__}: {text}" if text else type(error).__name__
        return Step(
            # The state as the error left it, made storable: a script that failed on a value
            # the store cannot hold (a set) has already written it to the task's data, and a
            # start saves this state (every start of the credential was a 500).
            engine_state=lenient(serializer.engine_state(workflow)),
            ready=[],
            messages=[],
            timers=[],
            error=text[:2000],
            error_element_id=getattr(getattr(task, "task_spec", None), "bpmn_id", None),
        )


def _ready(task: Any) -> ReadyTask:
    spec = task.task_spec
    return ReadyTask(
        engine_task_id=str(task.id),
        element_id=spec.bpmn_id,
        name=spec.bpmn_name or spec.bpmn_id,
        kind="manual" if isinstance(spec, ManualTask) else "user",
        lane=spec.lane,
        form=None if isinstance(spec, ManualTask) else properties(spec).get(FORM_PROPERTY),
        documentation=spec.documentation or "",
        due_in=properties(spec).get("dueIn"),
    )


def _is_message(event: Any) -> bool:
    """Only a thrown message leaves the process: a signal, an error or a terminate end is
    the engine's own business (an error named ``email`` became an email)."""
    return isinstance(event.event_definition, MessageEventDefinition)


def _message(event: Any) -> dict[str, Any]:
    """A thrown message as it is stored: its payload and correlations made storable (dates as
    ISO 8601, keys as text, a set as a list, anything else its repr), as JSON would have
    kept them; a date made the save of the step fail on every retry."""
    return {
        "name": event.event_definition.name,
        "payload": lenient(event.payload),
        "correlations": lenient(dict(event.correlations or {})),
    }


def _timers(workflow: BpmnWorkflow) -> list[dict[str, Any]]:
    timers = []
    for task in workflow.get_tasks(state=TaskState.WAITING):
        definition = getattr(task.task_spec, "event_definition", None)
        if isinstance(definition, TimerEventDefinition):
            due = definition.details(task).value
            timers.append({
                "element_id": task.task_spec.bpmn_id,
                "engine_task_id": str(task.id),
                "due_at": due if isinstance(due, str) else None,
            })
    return timers


def _message_waits(workflow: BpmnWorkflow) -> list[Any]:
    return [
        task
        for task in workflow.get_tasks(state=TaskState.WAITING)
        if isinstance(getattr(task.task_spec, "event_definition", None), MessageEventDefinition)
    ]


def _end_event(workflow: BpmnWorkflow) -> Any:
    """The end event that decides the outcome: a ``fail`` end reached anywhere in the main
    process wins over any ``pass`` end (a side branch's end reached later turned a failed
    assessment into a pass, an achievement for a fail); else the last end reached."""
    ends = sorted(
        (task for task in workflow.get_tasks(state=TaskState.COMPLETED)
         if isinstance(task.task_spec, EndEvent) and task.workflow is workflow),
        key=lambda task: task.last_state_change,
    )
    failed = [task for task in ends if properties(task.task_spec).get("outcome") == FAIL]
    return (failed or ends or [None])[-1]
