"""Instance queries: by user, status, result, credential, skill, start and end time,
newest first by (started_at, id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from application.queries.pagination import Page, after, clamp_limit, decode_cursor, page
from application.queries.store import ReadStore

PROJECTION = "instances"
INSTANCES = "rm_instances"
SORT = [("started_at", "timestamptz"), ("id", "uuid")]


def list_instances(
    store: ReadStore, *, user_id: str | None = None, status: str | None = None, result: str | None = None,
    credential_id: str | None = None, skill_id: str | None = None,
    started_after: datetime | None = None, started_before: datetime | None = None,
    ended_after: datetime | None = None, ended_before: datetime | None = None, with_deleted: bool = True,
    limit: int = 50, cursor: str | None = None, wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    limit = clamp_limit(limit)
    start = decode_cursor("instances", cursor, len(SORT))
    filters: list[sql.Composable] = [] if with_deleted else [sql.SQL("status <> 'deleted'")]
    values: list[Any] = []
    for column, value in (("user_id", user_id), ("status", status), ("result", result),
                          ("credential_id", credential_id), ("skill_id", skill_id)):
        if value is not None:
            filters.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            values.append(value)
    for clause, value in (("started_at >= %s", started_after), ("started_at < %s", started_before),
                          ("ended_at >= %s", ended_after), ("ended_at < %s", ended_before)):
        if value is not None:
            filters.append(sql.SQL(clause))
            values.append(value)
    condition, params = after(SORT, start, descending=True)
    where = sql.SQL(" AND ").join(filters) if filters else sql.SQL("true")
    query = sql.SQL("SELECT * FROM {} WHERE {}{} ORDER BY started_at DESC, id DESC LIMIT %s").format(
        store.table(INSTANCES), where, condition)
    rows, position = store.fetch(PROJECTION, query, [*values, *params, limit + 1],
                                 wait_for=wait_for, timeout=timeout)
    return page("instances", rows, limit, ["started_at", "id"], position)


def get_instance(store: ReadStore, instance_id: UUID, *, wait_for: int | None = None,
                 timeout: float = 5.0) -> dict[str, Any] | None:
    rows, _ = store.fetch(PROJECTION, sql.SQL("SELECT * FROM {} WHERE id = %s").format(store.table(INSTANCES)),
                          [instance_id], wait_for=wait_for, timeout=timeout)
    return rows[0] if rows else None
