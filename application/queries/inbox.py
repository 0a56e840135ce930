"""Task inbox queries: my tasks, my groups' tasks, both; tasks by instance, credential,
skill, status, due date; tasks completed by someone. Sorted by (created_at, id), oldest
first, except completed tasks: newest completion first."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from application.queries.pagination import Page, after, clamp_limit, decode_cursor, page
from application.queries.store import ReadStore
from domain.identity import group_key

PROJECTION = "task_inbox"
TASKS = "rm_tasks"
SORT = [("created_at", "timestamptz"), ("id", "uuid")]
SORT_NAMES = [name for name, _ in SORT]


def group_tasks(
    store: ReadStore, groups: list[str], *, unclaimed_only: bool = False, limit: int = 50,
    cursor: str | None = None, wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Open tasks offered to any of ``groups`` (claimed or not, unless ``unclaimed_only``)."""
    return inbox(store, None, groups, unclaimed_only=unclaimed_only, limit=limit, cursor=cursor,
                 wait_for=wait_for, timeout=timeout)


def my_tasks(
    store: ReadStore, user_id: str, *, limit: int = 50, cursor: str | None = None,
    wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Open tasks assigned to ``user_id`` (a learner's own tasks, or claimed ones)."""
    return inbox(store, user_id, [], limit=limit, cursor=cursor, wait_for=wait_for, timeout=timeout)


def inbox(
    store: ReadStore, user_id: str | None, groups: list[str], *, unclaimed_only: bool = False,
    limit: int = 50, cursor: str | None = None, wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Open tasks assigned to ``user_id`` plus open tasks offered to ``groups``.

    One index range per group (and one for the assignee), each read in sort order and
    cut at ``limit``, then merged: the cost follows the page size, not the inbox size.
    """
    limit = clamp_limit(limit)
    start = decode_cursor("inbox", cursor, len(SORT))
    built = inbox_query(store, user_id, groups, unclaimed_only=unclaimed_only, limit=limit, start=start)
    if built is None:
        return Page(items=[], next_cursor=None, position=store.wait_for(PROJECTION, wait_for, timeout))
    rows, position = store.fetch(PROJECTION, *built, wait_for=wait_for, timeout=timeout)
    return page("inbox", rows, limit, SORT_NAMES, position)


def inbox_query(
    store: ReadStore, user_id: str | None, groups: list[str], *, unclaimed_only: bool, limit: int,
    start: list[Any] | None,
) -> tuple[sql.Composable, list[Any]] | None:
    """The SQL of one inbox page (``limit + 1`` rows), or None when nothing can match."""
    keys = sorted({group_key(group) for group in groups})
    condition, params = after(SORT, start)
    table = store.table(TASKS)
    branches: list[sql.Composable] = []
    values: list[Any] = []
    if keys:
        claim = sql.SQL(" AND assignee IS NULL") if unclaimed_only else sql.SQL("")
        branches.append(sql.SQL(
            "SELECT t.* FROM unnest(%s::text[]) AS g(name) CROSS JOIN LATERAL ("
            "SELECT * FROM {table} WHERE status = 'open' AND candidate_group = g.name{claim}{after} "
            "ORDER BY created_at, id LIMIT %s) t"
        ).format(table=table, claim=claim, after=condition))
        values += [keys, *params, limit + 1]
    if user_id is not None:
        branches.append(sql.SQL(
            "(SELECT * FROM {table} WHERE status = 'open' AND assignee = %s{after} "
            "ORDER BY created_at, id LIMIT %s)"
        ).format(table=table, after=condition))
        values += [user_id, *params, limit + 1]
    if not branches:
        return None
    query = sql.SQL("SELECT * FROM ({}) inbox ORDER BY created_at, id LIMIT %s").format(
        sql.SQL(" UNION ").join(branches))
    return query, [*values, limit + 1]


def tasks(
    store: ReadStore, *, instance_id: UUID | None = None, credential_id: str | None = None,
    skill_id: str | None = None, status: str | None = None, assignee: str | None = None,
    candidate_group: str | None = None, due_before: datetime | None = None,
    due_after: datetime | None = None, limit: int = 50, cursor: str | None = None,
    wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Tasks matching every filter given (for admins and dashboards' drill-downs)."""
    limit = clamp_limit(limit)
    start = decode_cursor("tasks", cursor, len(SORT))
    filters: list[sql.Composable] = []
    values: list[Any] = []
    for column, value in (("instance_id", instance_id), ("credential_id", credential_id),
                          ("skill_id", skill_id), ("status", status), ("assignee", assignee),
                          ("candidate_group", candidate_group and group_key(candidate_group))):
        if value is not None:
            filters.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            values.append(value)
    if due_before is not None:
        filters.append(sql.SQL("due_at < %s"))
        values.append(due_before)
    if due_after is not None:
        filters.append(sql.SQL("due_at >= %s"))
        values.append(due_after)
    condition, params = after(SORT, start)
    where = sql.SQL(" AND ").join(filters) if filters else sql.SQL("true")
    query = sql.SQL("SELECT * FROM {} WHERE {}{} ORDER BY created_at, id LIMIT %s").format(
        store.table(TASKS), where, condition)
    rows, position = store.fetch(PROJECTION, query, [*values, *params, limit + 1],
                                 wait_for=wait_for, timeout=timeout)
    return page("tasks", rows, limit, SORT_NAMES, position)


def completed_by(
    store: ReadStore, user_id: str, *, limit: int = 50, cursor: str | None = None,
    wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Tasks ``user_id`` completed, the most recent first."""
    limit = clamp_limit(limit)
    sort = [("completed_at", "timestamptz"), ("id", "uuid")]
    start = decode_cursor("completed", cursor, len(sort))
    condition, params = after(sort, start, descending=True)
    query = sql.SQL(
        "SELECT * FROM {} WHERE status = 'completed' AND completed_by = %s{} "
        "ORDER BY completed_at DESC, id DESC LIMIT %s").format(store.table(TASKS), condition)
    rows, position = store.fetch(PROJECTION, query, [user_id, *params, limit + 1],
                                 wait_for=wait_for, timeout=timeout)
    return page("completed", rows, limit, ["completed_at", "id"], position)


def get_task(store: ReadStore, task_id: UUID, *, wait_for: int | None = None,
             timeout: float = 5.0) -> dict[str, Any] | None:
    rows, _ = store.fetch(PROJECTION, sql.SQL("SELECT * FROM {} WHERE id = %s").format(store.table(TASKS)),
                          [task_id], wait_for=wait_for, timeout=timeout)
    return rows[0] if rows else None
