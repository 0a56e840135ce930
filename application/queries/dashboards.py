"""Dashboards per credential or per skill: counts by status, pass rate, median and p90
time to complete, open tasks per group, overdue tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from application.queries.store import ReadStore
from domain.errors import InvalidInput, Problem

PROJECTION = "dashboards"
SCOPES = {"credential": "credential_id", "skill": "skill_id"}


def dashboard(
    store: ReadStore, scope: str, scope_id: str, *, now: datetime | None = None,
    wait_for: int | None = None, timeout: float = 5.0,
) -> dict[str, Any]:
    """The dashboard of one credential (``scope="credential"``) or skill (``"skill"``)."""
    column = SCOPES.get(scope)
    if column is None:
        raise InvalidInput("a dashboard is per credential or per skill",
                           [Problem("scope", "must be 'credential' or 'skill'")])
    now = now or datetime.now(UTC)
    if wait_for is not None:
        store.wait_for(PROJECTION, wait_for, timeout)
    with store.cursor() as cur:
        position = store._position(cur, PROJECTION)
        cur.execute(sql.SQL("SELECT metric, n FROM {} WHERE scope = %s AND scope_id = %s").format(
            store.table("rm_dash_counts")), (scope, scope_id))
        counts = {row["metric"]: row["n"] for row in cur.fetchall()}
        cur.execute(sql.SQL(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_complete) AS median, "
            "percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds_to_complete) AS p90 "
            "FROM {} WHERE {} = %s AND status = 'completed'").format(
            store.table("rm_dash_instances"), sql.Identifier(column)), (scope_id,))
        times = cur.fetchone() or {}
        cur.execute(sql.SQL(
            "SELECT count(*) AS n FROM {} WHERE {} = %s AND status = 'open' AND due_at IS NOT NULL "
            "AND due_at < %s").format(store.table("rm_dash_tasks"), sql.Identifier(column)), (scope_id, now))
        overdue = (cur.fetchone() or {"n": 0})["n"]
    instances = {m.split(".", 1)[1]: n for m, n in counts.items() if m.startswith("instances.")}
    passed, failed = counts.get("result.pass", 0), counts.get("result.fail", 0)
    return {
        "scope": scope,
        "scope_id": scope_id,
        "instances_by_status": instances,
        "passed": passed,
        "failed": failed,
        "pass_rate": passed / (passed + failed) if passed + failed else None,
        "median_seconds_to_complete": times.get("median"),
        "p90_seconds_to_complete": times.get("p90"),
        "open_tasks_by_group": {m.split(".", 2)[2]: n for m, n in counts.items() if m.startswith("tasks.open.")},
        "overdue_tasks": overdue,
        "position": position,
    }
