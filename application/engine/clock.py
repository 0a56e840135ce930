"""Timer events that read the application's clock, and fire only when told to.

SpiffWorkflow's timer definitions read ``datetime.now()`` twice: when a timer starts
waiting (to compute its due time) and on every refresh (to decide whether it fired). Here
both change:

- the due time is computed from ``engine_now()``, the instant the ``Engine`` was given for
  this step (the application's injectable clock), so tests and replicas agree;
- a timer never fires by looking at a clock. It fires when the application marks it
  (``fire``), after the scheduler found it due; that step is recorded as an event, so
  replay never depends on when it runs.

The classes keep SpiffWorkflow's class names: the serializer stores specs by class name,
and registering these after the originals makes every restored spec use them while specs
stored before this change restore unchanged (ADR 0007).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions import timer
from SpiffWorkflow.util.task import TaskState

_NOW: ContextVar[datetime | None] = ContextVar("engine_now", default=None)
FIRE_REQUESTED = "fire_requested"


@contextmanager
def engine_clock(now: datetime) -> Iterator[None]:
    """Runs the block with ``now`` as the engine's current instant."""
    if now.tzinfo is None:
        raise ValueError("the engine clock needs a timezone-aware datetime")
    token = _NOW.set(now.astimezone(timezone.utc))
    try:
        yield
    finally:
        _NOW.reset(token)


def engine_now() -> datetime:
    now = _NOW.get()
    if now is None:
        raise RuntimeError("the engine ran a timer outside engine_clock(): no clock to read")
    return now


def as_utc(value: str) -> datetime:
    """An ISO 8601 instant; one without an offset is UTC (never the server's zone)."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def fire(task: Any) -> None:
    """Marks a waiting timer task as fired; the next refresh moves it on."""
    if isinstance(task.task_spec.event_definition, CycleTimerEventDefinition):
        task._set_internal_data(**{FIRE_REQUESTED: True})
    else:
        task._set_internal_data(event_fired=True)


class TimeDateEventDefinition(timer.TimeDateEventDefinition):
    def has_fired(self, my_task: Any) -> bool:
        if my_task._get_internal_data("event_value") is None:
            value = my_task.workflow.script_engine.evaluate(my_task, self.expression)
            my_task._set_internal_data(event_value=_instant(value).isoformat())
        return my_task._get_internal_data("event_fired", False)


class DurationTimerEventDefinition(timer.DurationTimerEventDefinition):
    def has_fired(self, my_task: Any) -> bool:
        if my_task._get_internal_data("event_value") is None:
            expression = my_task.workflow.script_engine.evaluate(my_task, self.expression)
            parsed = timer.TimerEventDefinition.parse_iso_duration(expression)
            now = engine_now()
            due = now + timer.TimerEventDefinition.get_timedelta_from_start(parsed, now)
            my_task._set_internal_data(event_value=due.isoformat())
        return my_task._get_internal_data("event_fired", False)


class CycleTimerEventDefinition(timer.CycleTimerEventDefinition):
    """``R<n>/<start>/<duration>``: each cycle fires when the application says so."""

    def cycle_complete(self, my_task: Any) -> bool:
        value = my_task._get_internal_data("event_value")
        if value is None:
            expression = my_task.workflow.script_engine.evaluate(my_task, self.expression)
            value = _first_cycle(expression, engine_now())
        ready = False
        if value["cycles"] != 0:
            if my_task.internal_data.pop(FIRE_REQUESTED, False):
                due = as_utc(value["next"])
                value["next"] = (due + timedelta(seconds=value["duration"])).isoformat()
                value["cycles"] -= 1
                ready = True
        else:
            my_task.internal_data.pop("event_value", None)
            my_task.internal_data["event_fired"] = True
            return False
        my_task._set_internal_data(event_value=value)
        return ready

    def update_task(self, my_task: Any) -> None:
        if self.cycle_complete(my_task):
            for output in my_task.task_spec.outputs:
                child = my_task._add_child(output, TaskState.FUTURE)
                child.task_spec._predict(child, mask=TaskState.NOT_FINISHED_MASK)
                child.task_spec._update(child)


def _instant(value: str) -> datetime:
    if "W" in value.upper() and not value.upper().startswith("P"):
        return timer.TimerEventDefinition.parse_iso_week(value).astimezone(timezone.utc)
    return as_utc(value)


def _first_cycle(expression: str, now: datetime) -> dict[str, Any]:
    parts = expression.upper().replace("--", "/").strip("R").split("/")
    cycles = int(parts[0]) if parts[0] else -1
    first = _duration_or_instant(parts[1])
    second = _duration_or_instant(parts[2]) if len(parts) == 3 else None
    if isinstance(first, datetime):
        start, duration = first, timer.TimerEventDefinition.get_timedelta_from_start(second, first)
    elif isinstance(second, datetime):
        duration = timer.TimerEventDefinition.get_timedelta_from_end(first, second)
        start = second - duration
    elif second is None:
        duration = timer.TimerEventDefinition.get_timedelta_from_start(first, now)
        start = now + duration
    else:
        raise ValueError(f"invalid recurring interval {expression!r}")
    if duration <= timedelta(0):
        # It would be due again at once, every scheduler round, for ever (``R/PT0S``): each
        # firing a stored step. The engine step fails instead, and the instance with it.
        raise ValueError(f"a cycle timer repeats after a period above zero, not {expression!r}")
    return {"cycles": cycles, "next": start.isoformat(), "duration": duration.total_seconds()}


def _duration_or_instant(part: str) -> Any:
    if part.upper().startswith("P"):
        return timer.TimerEventDefinition.parse_iso_duration(part)
    return _instant(part)


CLOCKED_TIMERS = (TimeDateEventDefinition, DurationTimerEventDefinition, CycleTimerEventDefinition)
