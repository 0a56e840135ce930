"""The skillbase BPMN conventions (DESIGN.md), checked on a parsed process.

- every end event of the main process declares ``outcome`` = ``pass`` or ``fail``;
- every user and manual task lies in a lane with a name of at most 200 characters (the lane
  is its candidate group);
- a user task's ``formJsonSchemaFilename`` names a form file of the bundle, and only user
  tasks have one;
- a human task's ``dueIn`` is an ISO 8601 duration above zero and at most 100 years;
- no service task (the service calls no other services);
- every script, condition, payload and timer expression passes the sandbox's check;
- an ``email`` message names a ``template`` and one recipient (``to`` or ``to_group``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import isodate

from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.events.end_event import EndEvent
from SpiffWorkflow.bpmn.specs.mixins.manual_task import ManualTask
from SpiffWorkflow.bpmn.specs.mixins.script_task import ScriptTask
from SpiffWorkflow.bpmn.specs.mixins.service_task import ServiceTask
from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask

from application.engine.scripts import check_source
from domain.errors import Problem

OUTCOMES = ("pass", "fail")
EMAIL_MESSAGE = "email"
FORM_PROPERTY = "formJsonSchemaFilename"
DUE_IN_PROPERTY = "dueIn"
MAX_LANE_CHARS = 200  # the group a token names, kept in an index of the task inbox
_SOME_DAY = datetime(2000, 1, 1, tzinfo=timezone.utc)
_DUE_IN_LIMIT = datetime(2100, 1, 1, tzinfo=timezone.utc)


def properties(task_spec: Any) -> dict[str, str]:
    return (getattr(task_spec, "extensions", None) or {}).get("properties", {}) or {}


def is_human(task_spec: Any) -> bool:
    return isinstance(task_spec, (UserTask, ManualTask))


def check(
    spec: Any, subprocess_specs: dict[str, Any], forms: dict[str, Any], files: dict[str, bytes]
) -> list[Problem]:
    bpmn_file = next(name for name in files if name.endswith(".bpmn"))
    problems: list[Problem] = []
    problems += _end_events(spec, bpmn_file)
    for process in [spec, *subprocess_specs.values()]:
        for task_spec in process.task_specs.values():
            problems += _human_task(task_spec, forms, bpmn_file)
            problems += _expressions(task_spec, bpmn_file)
            problems += _email(task_spec, bpmn_file)
    return problems


def _end_events(spec: Any, bpmn_file: str) -> Iterator[Problem]:
    for task_spec in spec.task_specs.values():
        if isinstance(task_spec, EndEvent):
            outcome = properties(task_spec).get("outcome")
            if outcome not in OUTCOMES:
                yield Problem(
                    path=bpmn_file,
                    element=task_spec.bpmn_id,
                    message="every end event declares the property outcome = pass or fail"
                    + (f" (found {outcome!r})" if outcome else ""),
                )


def _human_task(task_spec: Any, forms: dict[str, Any], bpmn_file: str) -> Iterator[Problem]:
    if isinstance(task_spec, ServiceTask):
        yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                      message="service tasks are not supported: the service calls no other services")
    if not is_human(task_spec):
        return
    if not (task_spec.lane or "").strip():
        yield Problem(
            path=bpmn_file,
            element=task_spec.bpmn_id,
            message="a user or manual task must lie in a lane: the lane names who does it",
        )
    elif len(task_spec.lane) > MAX_LANE_CHARS:
        yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                      message=f"a lane name (a group) has at most {MAX_LANE_CHARS} characters")
    form = properties(task_spec).get(FORM_PROPERTY)
    if form is not None and not isinstance(task_spec, UserTask):
        yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                      message="only a user task takes a form: a manual task is marked done with {}")
    elif form is not None and form not in forms:
        yield Problem(
            path=bpmn_file,
            element=task_spec.bpmn_id,
            message=f"the form file {form!r} is not in the bundle",
        )
    due_in = properties(task_spec).get(DUE_IN_PROPERTY)
    if due_in is not None and not _is_due_in(due_in):
        yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                      message="dueIn is an ISO 8601 duration above zero and at most 100 years, "
                              f"such as P14D or PT36H (found {due_in[:64]!r})")


def _is_due_in(text: str) -> bool:
    try:
        due = _SOME_DAY + isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, TypeError, OverflowError):
        return False
    return _SOME_DAY < due <= _DUE_IN_LIMIT


def _sources(task_spec: Any) -> Iterator[tuple[str, str, str]]:
    """(what, source, mode) for every piece of code the engine will run for this spec."""
    if isinstance(task_spec, ScriptTask):
        yield "script", task_spec.script or "", "exec"
    for name in ("prescript", "postscript"):
        if getattr(task_spec, name, None):
            yield name, getattr(task_spec, name), "exec"
    for condition, _target in getattr(task_spec, "cond_task_specs", []) or []:
        source = condition.args[0] if hasattr(condition, "args") else condition
        if isinstance(source, str) and source:
            yield "condition", source, "eval"
    definition = getattr(task_spec, "event_definition", None)
    expression = getattr(definition, "expression", None)
    if expression:
        yield ("timer" if isinstance(definition, TimerEventDefinition) else "payload"), expression, "eval"


def _expressions(task_spec: Any, bpmn_file: str) -> Iterator[Problem]:
    for what, source, mode in _sources(task_spec):
        for violation in check_source(source, mode=mode):
            yield Problem(path=bpmn_file, element=task_spec.bpmn_id, message=f"{what}: {violation}")


def _email(task_spec: Any, bpmn_file: str) -> Iterator[Problem]:
    definition = getattr(task_spec, "event_definition", None)
    if not isinstance(definition, MessageEventDefinition) or definition.name != EMAIL_MESSAGE:
        return
    if getattr(definition, "expression", None) is None:
        # A catching email event has no payload to check.
        if type(task_spec).__name__ in ("SendTask", "IntermediateThrowEvent", "EndEvent"):
            yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                          message="an email needs a messagePayload with template and to or to_group")
        return
    try:
        payload = ast.literal_eval(definition.expression)
    except (ValueError, SyntaxError):
        return  # computed at run time; the mail worker checks it then
    if not isinstance(payload, dict) or not isinstance(payload.get("template"), str):
        yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                      message="an email payload is a dict with a 'template' name")
    elif sum(key in payload for key in ("to", "to_group")) != 1:
        yield Problem(path=bpmn_file, element=task_spec.bpmn_id,
                      message="an email payload names exactly one of 'to' or 'to_group'")
