"""Achievements: the credentials a user passed, newest first, and how many."""

from __future__ import annotations

from psycopg import sql

from application.queries.pagination import Page, after, clamp_limit, decode_cursor, page
from application.queries.store import ReadStore

PROJECTION = "achievements"


def achievements(
    store: ReadStore, user_id: str, *, limit: int = 50, cursor: str | None = None,
    wait_for: int | None = None, timeout: float = 5.0,
) -> Page:
    """The passes of ``user_id``; ``extra["total"]`` is how many there are in all."""
    limit = clamp_limit(limit)
    sort = [("achieved_at", "timestamptz"), ("id", "uuid")]
    condition, params = after(sort, decode_cursor("achievements", cursor, 2), descending=True)
    # The count comes with every answer, also a page with no rows left (one row, a.* null).
    query = sql.SQL(
        "SELECT n.total, a.* FROM (SELECT count(*) AS total FROM {t} WHERE user_id = %s "
        "AND achieved_at IS NOT NULL) n LEFT JOIN LATERAL (SELECT * FROM {t} WHERE user_id = %s "
        "AND achieved_at IS NOT NULL{c} ORDER BY achieved_at DESC, id DESC LIMIT %s) a ON true"
    ).format(t=store.table("rm_achievements"), c=condition)
    found, position = store.fetch(PROJECTION, query, [user_id, user_id, *params, limit + 1],
                                  wait_for=wait_for, timeout=timeout)
    total = found[0]["total"]
    rows = [row for row in found if row["id"] is not None]
    for row in rows:
        row.pop("total")
    result = page("achievements", rows, limit, ["achieved_at", "id"], position)
    result.extra["total"] = total
    return result


def pass_count(store: ReadStore, user_id: str, *, wait_for: int | None = None, timeout: float = 5.0) -> int:
    rows, _ = store.fetch(PROJECTION, sql.SQL(
        "SELECT count(*) AS n FROM {} WHERE user_id = %s AND achieved_at IS NOT NULL").format(
        store.table("rm_achievements")), [user_id], wait_for=wait_for, timeout=timeout)
    return rows[0]["n"]
