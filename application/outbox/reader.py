"""A tracked reader of the notification log: its position and its rows, one transaction.

Each batch runs in one transaction that first locks the reader's position row, so readers
on several replicas take turns and none applies an event twice or out of order; a reader
that stops anywhere resumes after the last committed batch; deleting its position (and
rows) rebuilds it from the first event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from application.outbox.tables import POSITIONS, ensure_tables, q


class TrackedReader(ABC):
    name = ""
    topics: tuple[str, ...] = ()

    def __init__(self, app: Any, batch_size: int = 500) -> None:
        self.app = app
        self.datastore = app.recorder.datastore
        self.batch_size = batch_size
        ensure_tables(self.datastore)

    @abstractmethod
    def handle(self, curs: Any, domain_event: Any, notification: Any) -> None:
        """Applies one event to the reader's rows, inside the batch's transaction."""

    def catch_up(self) -> int:
        """Reads every event recorded so far; returns how many it applied."""
        applied = 0
        while True:
            with self.datastore.transaction(commit=True) as curs:
                position = self._lock_position(curs)
                notifications = self.app.recorder.select_notifications(
                    start=position, limit=self.batch_size, topics=self.topics, inclusive_of_start=False
                )
                for notification in notifications:
                    self.handle(curs, self.app.mapper.to_domain_event(notification), notification)
                if notifications:
                    curs.execute(
                        q(self.datastore, f"UPDATE {{schema}}.{POSITIONS} SET notification_id = %s WHERE reader = %s"),
                        (notifications[-1].id, self.name),
                    )
            applied += len(notifications)
            if len(notifications) < self.batch_size:
                return applied

    def position(self) -> int:
        with self.datastore.transaction() as curs:
            curs.execute(q(self.datastore, f"SELECT notification_id FROM {{schema}}.{POSITIONS} WHERE reader = %s"),
                         (self.name,))
            row = curs.fetchone()
        return row["notification_id"] if row else 0

    def _lock_position(self, curs: Any) -> int:
        curs.execute(
            q(self.datastore, f"INSERT INTO {{schema}}.{POSITIONS} (reader) VALUES (%s) ON CONFLICT DO NOTHING"),
            (self.name,),
        )
        curs.execute(
            q(self.datastore, f"SELECT notification_id FROM {{schema}}.{POSITIONS} WHERE reader = %s FOR UPDATE"),
            (self.name,),
        )
        return curs.fetchone()["notification_id"]
