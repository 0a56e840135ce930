"""Dashboards per credential and per skill.

Counts (instances by status, passes and fails, open tasks per group) are kept as counters
that every batch moves by what its rows counted before and after. Times to complete and
overdue tasks depend on the whole distribution or on the clock, so the dashboard keeps
the few columns they need, indexed per credential and per skill, and the query computes
them (``application/queries/dashboards.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from domain.instance import (
    CANCELLED,
    COMPLETED,
    DELETED,
    FAILED,
    RUNNING,
    WorkflowInstance,
)
from domain.task import CANCELLED as TASK_CANCELLED
from domain.task import COMPLETED as TASK_COMPLETED
from domain.task import DELETED as TASK_DELETED
from domain.task import OPEN, WorkflowTask
from projections.projection import Projection, Row, on
from projections.table import Table

LEARNER = "learner"

DASH_INSTANCES = Table(
    name="rm_dash_instances",
    columns=(
        ("id", "uuid NOT NULL"),
        ("credential_id", "text NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("status", "text NOT NULL"),
        ("result", "text"),
        ("started_at", "timestamptz NOT NULL"),
        ("seconds_to_complete", "double precision"),
    ),
    indexes=(
        "(credential_id, seconds_to_complete) WHERE status = 'completed'",
        "(skill_id, seconds_to_complete) WHERE status = 'completed'",
    ),
)

DASH_TASKS = Table(
    name="rm_dash_tasks",
    columns=(
        ("id", "uuid NOT NULL"),
        ("credential_id", "text NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("candidate_group", "text NOT NULL"),
        ("status", "text NOT NULL"),
        ("due_at", "timestamptz"),
    ),
    indexes=(
        "(credential_id, due_at) WHERE status = 'open' AND due_at IS NOT NULL",
        "(skill_id, due_at) WHERE status = 'open' AND due_at IS NOT NULL",
    ),
)

DASH_COUNTS = Table(
    name="rm_dash_counts",
    columns=(
        ("scope", "text NOT NULL"),
        ("scope_id", "text NOT NULL"),
        ("metric", "text NOT NULL"),
        ("n", "bigint NOT NULL"),
    ),
    key=("scope", "scope_id", "metric"),
)


class Dashboards(Projection):
    name = "dashboards"
    tables = (DASH_INSTANCES, DASH_TASKS)
    counters = DASH_COUNTS

    def counts(self, table: Table, row: Row) -> Iterable[tuple[Any, ...]]:
        scopes = (("credential", row["credential_id"]), ("skill", row["skill_id"]))
        if table is DASH_INSTANCES:
            metrics = [f"instances.{row['status']}"]
            if row["status"] == COMPLETED and row["result"]:
                metrics.append(f"result.{row['result']}")
        elif row["status"] == OPEN:
            metrics = [f"tasks.open.{row['candidate_group']}"]
        else:
            metrics = []
        return [(scope, scope_id, metric) for scope, scope_id in scopes for metric in metrics]

    # -- instances -------------------------------------------------------------------------

    @on(DASH_INSTANCES, WorkflowInstance.Started)
    def started(self, event: WorkflowInstance.Started, row: Row | None) -> Row:
        return {
            "id": event.originator_id, "credential_id": event.credential_id, "skill_id": event.skill_id,
            "status": RUNNING, "result": None, "started_at": event.timestamp, "seconds_to_complete": None,
        }

    @on(DASH_INSTANCES, WorkflowInstance.Completed)
    def completed(self, event: WorkflowInstance.Completed, row: Row | None) -> Row | None:
        if row is None:
            return None
        seconds = (event.timestamp - row["started_at"]).total_seconds()
        return {**row, "status": COMPLETED, "result": event.result, "seconds_to_complete": seconds}

    @on(DASH_INSTANCES, WorkflowInstance.Cancelled)
    def cancelled(self, event: WorkflowInstance.Cancelled, row: Row | None) -> Row | None:
        return row and {**row, "status": CANCELLED}

    @on(DASH_INSTANCES, WorkflowInstance.Failed)
    def failed(self, event: WorkflowInstance.Failed, row: Row | None) -> Row | None:
        return row and {**row, "status": FAILED}

    @on(DASH_INSTANCES, WorkflowInstance.Deleted)
    def deleted(self, event: WorkflowInstance.Deleted, row: Row | None) -> Row | None:
        return row and {**row, "status": DELETED}

    # -- tasks -----------------------------------------------------------------------------

    @on(DASH_TASKS, WorkflowTask.Created)
    def task_created(self, event: WorkflowTask.Created, row: Row | None) -> Row:
        return {
            "id": event.originator_id, "credential_id": event.credential_id, "skill_id": event.skill_id,
            "candidate_group": event.candidate_group or LEARNER, "status": OPEN, "due_at": event.due_at,
        }

    @on(DASH_TASKS, WorkflowTask.Completed)
    def task_completed(self, event: WorkflowTask.Completed, row: Row | None) -> Row | None:
        return row and {**row, "status": TASK_COMPLETED}

    @on(DASH_TASKS, WorkflowTask.Cancelled)
    def task_cancelled(self, event: WorkflowTask.Cancelled, row: Row | None) -> Row | None:
        return row and {**row, "status": TASK_CANCELLED}

    @on(DASH_TASKS, WorkflowTask.Deleted)
    def task_deleted(self, event: WorkflowTask.Deleted, row: Row | None) -> Row | None:
        return row and {**row, "status": TASK_DELETED}
