"""Instances: one row per process instance, by user, status, result, credential, skill,
start and end time. Lists are newest first, (started_at, id) descending.

``version`` is the aggregate's version after its latest event, whatever the event, so an
``If-Match`` taken from a list matches the instance's ``ETag`` (ADR 0005)."""

from __future__ import annotations

from typing import Any

from domain.instance import (
    CANCELLED,
    COMPLETED,
    DELETED,
    FAILED,
    RUNNING,
    WorkflowInstance,
)
from projections.projection import Projection, Row, on
from projections.table import Table

INSTANCES = Table(
    name="rm_instances",
    columns=(
        ("id", "uuid NOT NULL"),
        ("user_id", "text NOT NULL"),
        ("credential_id", "text NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("definition_id", "uuid NOT NULL"),
        ("definition_version", "integer NOT NULL"),
        ("status", "text NOT NULL"),
        ("result", "text"),
        ("started_at", "timestamptz NOT NULL"),
        ("ended_at", "timestamptz"),
        ("updated_at", "timestamptz NOT NULL"),
        ("version", "integer NOT NULL"),
    ),
    indexes=(
        "(user_id, started_at, id)",
        "(status, started_at, id)",
        "(credential_id, started_at, id)",
        "(skill_id, started_at, id)",
        "(result, ended_at, id) WHERE result IS NOT NULL",
        "(started_at, id)",
        "(ended_at, id) WHERE ended_at IS NOT NULL",
    ),
)


def _touch(event: Any, row: Row, **changes: Any) -> Row:
    return {**row, **changes, "updated_at": event.timestamp, "version": event.originator_version}


class Instances(Projection):
    name = "instances"
    tables = (INSTANCES,)

    @on(INSTANCES, WorkflowInstance.Started)
    def started(self, event: WorkflowInstance.Started, row: Row | None) -> Row:
        return {
            "id": event.originator_id, "user_id": event.user_id, "credential_id": event.credential_id,
            "skill_id": event.skill_id, "definition_id": event.definition_id,
            "definition_version": event.definition_version, "status": RUNNING, "result": None,
            "started_at": event.timestamp, "ended_at": None, "updated_at": event.timestamp,
            "version": event.originator_version,
        }

    @on(INSTANCES, WorkflowInstance.Completed)
    def completed(self, event: WorkflowInstance.Completed, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=COMPLETED, result=event.result, ended_at=event.timestamp)

    @on(INSTANCES, WorkflowInstance.Cancelled)
    def cancelled(self, event: WorkflowInstance.Cancelled, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=CANCELLED, ended_at=event.timestamp)

    @on(INSTANCES, WorkflowInstance.Failed)
    def failed(self, event: WorkflowInstance.Failed, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=FAILED, ended_at=event.timestamp)

    @on(INSTANCES, WorkflowInstance.Deleted)
    def deleted(self, event: WorkflowInstance.Deleted, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=DELETED)

    @on(INSTANCES, WorkflowInstance.Advanced, WorkflowInstance.FileAttached, WorkflowInstance.EmailSent,
        WorkflowInstance.IncidentRaised, WorkflowInstance.IncidentRetried)
    def touched(self, event: Any, row: Row | None) -> Row | None:
        """Events that change nothing listed here but the instance's version."""
        return row and _touch(event, row)
