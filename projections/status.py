"""Where each projection is: position, log head, lag, and which session leads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from projections import position as positions
from projections.follow import lock_key
from projections.log import EventLog
from projections.projection import Projection


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int | None
    head: int
    leader: str | None

    @property
    def lag(self) -> int | None:
        return None if self.position is None else max(0, self.head - self.position)


def status(event_log: EventLog, projections: list[Projection]) -> list[ProjectionStatus]:
    with event_log.connect("skillbase-projection-status") as conn, conn.cursor() as cur:
        head = event_log.head(cur)
        return [
            ProjectionStatus(p.name, _position(cur, event_log, p), head, _leader(cur, event_log, p))
            for p in projections
        ]


def _position(cur: psycopg.Cursor[Any], event_log: EventLog, projection: Projection) -> int | None:
    try:
        with cur.connection.transaction():
            return positions.read(cur, positions.tracking_table(projection.name), event_log.schema, "",
                                  event_log.application_name)
    except psycopg.errors.UndefinedTable:
        return None


def _leader(cur: psycopg.Cursor[Any], event_log: EventLog, projection: Projection) -> str | None:
    key = lock_key(event_log.schema, f"projection/{projection.name}") & 0xFFFFFFFFFFFFFFFF
    cur.execute(
        sql.SQL(
            "SELECT a.pid, a.application_name, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        (key >> 32, key & 0xFFFFFFFF),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return f"pid {row['pid']} {row['client_addr'] or 'local'} {row['application_name']}"
