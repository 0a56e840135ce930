"""Commands the scheduler runs when something falls due: timers, reminders, overdue tasks.

Each is safe to run twice and from several replicas at once: the first run records an
event, a concurrent one loses on the aggregate's version (a ``Conflict``), reloads and
finds nothing left to do. Each takes ``now`` from the scheduler (the application's clock),
so a timer fires only when it is due by that clock, and what it did is recorded: replay
never looks at a clock.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from application.app import WorkflowApplication
from application.engine.clock import as_utc
from application.message_commands import retry_on_conflict
from domain.instance import TIMER_FIRED, WorkflowInstance
from domain.task import WorkflowTask


class TimerCommands(WorkflowApplication):
    def fire_timer(self, instance_id: UUID, engine_task_id: str, now: datetime | None = None) -> bool:
        """Fires one due timer of an instance and advances it.

        Returns True if this call fired it; False when it is not due by ``now``, or is no
        longer waiting (it fired already, or the instance moved on or ended).
        """
        def command() -> bool:
            moment = now or self.clock()
            instance = self._find(WorkflowInstance, instance_id)
            if instance is None or not instance.is_running:
                return False
            timer = next((t for t in instance.timers if t.get("engine_task_id") == engine_task_id), None)
            if timer is None or (timer.get("due_at") and as_utc(timer["due_at"]) > moment):
                return False
            version = self.definition_version(instance.definition_id, instance.definition_version)
            step = self.engine.fire_timer(
                self._spec_ref(instance.definition_id, version), instance.engine_state, version.engine_format,
                engine_task_id, now=moment,
            )
            if step is None:
                return False
            others = self._advance(instance, step, cause=TIMER_FIRED, cause_id=engine_task_id, done=None)
            self.save_all(instance, *others)
            return True

        return retry_on_conflict(command)

    def remind_task(self, task_id_: UUID, now: datetime | None = None) -> bool:
        """Records the reminder email of an open task with a due date, once, and only before
        that date: a scheduler that was down past it would otherwise send "due soon" for a
        task already overdue (the overdue mark follows in the same round)."""
        def command() -> bool:
            task = self._find(WorkflowTask, task_id_)
            if task is None or (task.due_at is not None and task.due_at <= (now or self.clock())):
                return False
            if not task.remind():
                return False
            self.save_all(task)
            return True

        return retry_on_conflict(command)

    def mark_task_overdue(self, task_id_: UUID, now: datetime | None = None) -> bool:
        """Records that an open task passed its due date, once."""
        def command() -> bool:
            task = self._find(WorkflowTask, task_id_)
            if task is None or task.due_at is None or task.due_at > (now or self.clock()):
                return False
            if not task.mark_overdue():
                return False
            self.save_all(task)
            return True

        return retry_on_conflict(command)
