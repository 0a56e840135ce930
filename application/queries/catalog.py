"""Definitions and deployments as the catalog sees them."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from application.queries.pagination import Page, after, clamp_limit, decode_cursor, page
from application.queries.store import ReadStore

PROJECTION = "catalog"


def definitions(
    store: ReadStore, *, skill_id: str | None = None, include_deleted: bool = False, limit: int = 50,
    cursor: str | None = None, wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Definitions by credential id (optionally of one skill)."""
    return _list(store, "rm_definitions", "credential_id", "definitions", skill_id, include_deleted,
                 limit, cursor, wait_for, timeout)


def deployments(
    store: ReadStore, *, status: str | None = None, include_deleted: bool = False, limit: int = 50,
    cursor: str | None = None, wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """Deployments by skill id (optionally with one status: pending, active, retired)."""
    limit = clamp_limit(limit)
    sort = [("skill_id", "text"), ("id", "uuid")]
    condition, params = after(sort, decode_cursor("deployments", cursor, 2))
    filters = [sql.SQL("true")]
    values: list[Any] = []
    if status is not None:
        filters.append(sql.SQL("status = %s"))
        values.append(status)
    if not include_deleted:
        filters.append(sql.SQL("NOT deleted"))
    query = sql.SQL("SELECT * FROM {} WHERE {}{} ORDER BY skill_id, id LIMIT %s").format(
        store.table("rm_deployments"), sql.SQL(" AND ").join(filters), condition)
    rows, position = store.fetch(PROJECTION, query, [*values, *params, limit + 1],
                                 wait_for=wait_for, timeout=timeout)
    return page("deployments", rows, limit, ["skill_id", "id"], position)


def _list(store: ReadStore, table: str, key: str, kind: str, skill_id: str | None, include_deleted: bool,
          limit: int, cursor: str | None, wait_for: int | None, timeout: float) -> Page:
    limit = clamp_limit(limit)
    sort = [(key, "text"), ("id", "uuid")]
    condition, params = after(sort, decode_cursor(kind, cursor, 2))
    filters = [sql.SQL("true")]
    values: list[Any] = []
    if skill_id is not None:
        filters.append(sql.SQL("skill_id = %s"))
        values.append(skill_id)
    if not include_deleted:
        filters.append(sql.SQL("NOT deleted"))
    query = sql.SQL("SELECT * FROM {} WHERE {}{} ORDER BY {}, id LIMIT %s").format(
        store.table(table), sql.SQL(" AND ").join(filters), condition, sql.Identifier(key))
    rows, position = store.fetch(PROJECTION, query, [*values, *params, limit + 1],
                                 wait_for=wait_for, timeout=timeout)
    return page(kind, rows, limit, [key, "id"], position)
