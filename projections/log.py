"""The event store's notification log as projections read it: batches after a position.

Each read also returns the log head seen by the same statement. The store serialises
inserts with a table lock, so every id at or below that head is visible in that snapshot:
a projection that found nothing more of interest may advance its position to the head,
and a client waiting for any id (even one of an event the projection ignores) is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql


@dataclass(frozen=True)
class EventLog:
    """Where the log is and how to decode it; built from the application once."""

    conninfo: str
    schema: str
    events_table: str
    channel: str
    application_name: str
    mapper: Any

    @classmethod
    def of(cls, app: Any) -> EventLog:
        recorder = app.recorder
        datastore = recorder.datastore
        kwargs = dict(datastore.pool.kwargs)
        conninfo = psycopg.conninfo.make_conninfo(
            dbname=kwargs.get("dbname"), host=kwargs.get("host"), port=kwargs.get("port"),
            user=kwargs.get("user"), password=kwargs.get("password") or None,
        )
        return cls(
            conninfo=conninfo, schema=datastore.schema, events_table=recorder.events_table_name,
            channel=recorder.channel_name, application_name=app.name, mapper=app.mapper,
        )

    def connect(self, purpose: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=10, application_name=purpose[:63],
            row_factory=psycopg.rows.dict_row,
        )

    def read(
        self, cur: psycopg.Cursor[Any], after: int, topics: Sequence[str], limit: int
    ) -> tuple[list[StoredEvent], list[int], int]:
        """Up to ``limit`` stored events after ``after`` with one of ``topics``; their
        notification ids; and the log head."""
        cur.execute(
            sql.SQL(
                "SELECT h.head, e.notification_id, e.originator_id, e.originator_version, e.topic, e.state "
                "FROM (SELECT max(notification_id) AS head FROM {0}.{1}) h "
                "LEFT JOIN LATERAL (SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {0}.{1} WHERE notification_id > %s AND topic = ANY(%s) "
                "ORDER BY notification_id LIMIT %s) e ON true"
            ).format(sql.Identifier(self.schema), sql.Identifier(self.events_table)),
            (after, list(topics), limit),
            prepare=True,
        )
        rows = cur.fetchall()
        head = (rows[0]["head"] or 0) if rows else 0
        stored = [
            StoredEvent(
                originator_id=row["originator_id"], originator_version=row["originator_version"],
                topic=row["topic"], state=bytes(row["state"]),
            )
            for row in rows if row["notification_id"] is not None
        ]
        ids = [row["notification_id"] for row in rows if row["notification_id"] is not None]
        return stored, ids, head

    def decode(self, stored: Sequence[StoredEvent]) -> list[Any]:
        to_domain_event = self.mapper.to_domain_event
        return [to_domain_event(item) for item in stored]

    def head(self, cur: psycopg.Cursor[Any]) -> int:
        cur.execute(sql.SQL("SELECT max(notification_id) AS head FROM {}.{}").format(
            sql.Identifier(self.schema), sql.Identifier(self.events_table)))
        row = cur.fetchone()
        return (row["head"] if row else None) or 0
