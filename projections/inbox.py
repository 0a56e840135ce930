"""Task inbox: every task with who may work on it, indexed for the inbox queries.

Open tasks are found by assignee, by candidate group, by due date; any task by instance,
credential or skill and status; completed tasks by who completed them. Lists are sorted
by (created_at, id) so a cursor is stable; the partial indexes keep "open" lookups small.
"""

from __future__ import annotations

from typing import Any

from domain.task import CANCELLED, COMPLETED, DELETED, OPEN, WorkflowTask
from projections.projection import Projection, Row, on
from projections.table import Table

TASKS = Table(
    name="rm_tasks",
    columns=(
        ("id", "uuid NOT NULL"),
        ("instance_id", "uuid NOT NULL"),
        ("learner_id", "text NOT NULL"),
        ("credential_id", "text NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("element_id", "text NOT NULL"),
        ("name", "text NOT NULL"),
        ("kind", "text NOT NULL"),
        ("candidate_group", "text"),
        ("assignee", "text"),
        ("status", "text NOT NULL"),
        ("form", "text"),
        ("due_at", "timestamptz"),
        ("created_at", "timestamptz NOT NULL"),
        ("updated_at", "timestamptz NOT NULL"),
        ("completed_by", "text"),
        ("completed_at", "timestamptz"),
        ("version", "integer NOT NULL"),
    ),
    indexes=(
        "(candidate_group, created_at, id) WHERE status = 'open'",
        "(assignee, created_at, id) WHERE status = 'open'",
        "(due_at, id) WHERE status = 'open' AND due_at IS NOT NULL",
        "(instance_id, created_at, id)",
        "(credential_id, status, created_at, id)",
        "(skill_id, status, created_at, id)",
        "(completed_by, completed_at, id) WHERE status = 'completed'",
    ),
)


def _touch(event: Any, row: Row, **changes: Any) -> Row:
    return {**row, **changes, "updated_at": event.timestamp, "version": event.originator_version}


class TaskInbox(Projection):
    name = "task_inbox"
    tables = (TASKS,)

    @on(TASKS, WorkflowTask.Created)
    def created(self, event: WorkflowTask.Created, row: Row | None) -> Row:
        return {
            "id": event.originator_id, "instance_id": event.instance_id, "learner_id": event.learner_id,
            "credential_id": event.credential_id, "skill_id": event.skill_id,
            "element_id": event.element_id, "name": event.name, "kind": event.kind,
            "candidate_group": event.candidate_group, "assignee": event.assignee, "status": OPEN,
            "form": event.form, "due_at": event.due_at, "created_at": event.timestamp,
            "updated_at": event.timestamp, "completed_by": None, "completed_at": None,
            "version": event.originator_version,
        }

    @on(TASKS, WorkflowTask.Claimed)
    def claimed(self, event: WorkflowTask.Claimed, row: Row | None) -> Row | None:
        return row and _touch(event, row, assignee=event.by)

    @on(TASKS, WorkflowTask.Unclaimed)
    def unclaimed(self, event: WorkflowTask.Unclaimed, row: Row | None) -> Row | None:
        return row and _touch(event, row, assignee=None)

    @on(TASKS, WorkflowTask.Reassigned)
    def reassigned(self, event: WorkflowTask.Reassigned, row: Row | None) -> Row | None:
        return row and _touch(event, row, assignee=event.assignee)

    @on(TASKS, WorkflowTask.Completed)
    def completed(self, event: WorkflowTask.Completed, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=COMPLETED, completed_by=event.by, completed_at=event.timestamp)

    @on(TASKS, WorkflowTask.Cancelled)
    def cancelled(self, event: WorkflowTask.Cancelled, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=CANCELLED)

    @on(TASKS, WorkflowTask.Deleted)
    def deleted(self, event: WorkflowTask.Deleted, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=DELETED)

    @on(TASKS, WorkflowTask.Reminded, WorkflowTask.BecameOverdue)
    def touched(self, event: Any, row: Row | None) -> Row | None:
        """Events that change nothing listed here but the task's version (ADR 0005)."""
        return row and _touch(event, row)
