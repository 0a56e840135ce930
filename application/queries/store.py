"""The read side's handle on PostgreSQL: the event store's pool and schema.

``wait_for`` gives read-your-writes: it polls the read model's tracking row until it
reaches the given notification id, and raises ``ReadModelBehind`` after ``timeout``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from domain.errors import Unavailable

MAX_WAIT = 30.0


class ReadModelBehind(Unavailable):
    """The read model has not reached the position the client asked for in time."""


@dataclass(frozen=True)
class ReadStore:
    datastore: Any
    """eventsourcing's PostgresDatastore: its pool, with dict rows."""
    application_name: str

    @classmethod
    def of(cls, app: Any) -> ReadStore:
        return cls(datastore=app.recorder.datastore, application_name=app.name)

    @property
    def schema(self) -> str:
        return self.datastore.schema

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        try:
            # Autocommit, no explicit transaction: two round trips fewer per query. The
            # position is read first, so it is a lower bound of what the rows reflect.
            with self.datastore.get_connection() as conn, conn.cursor() as cur:
                yield cur
        except Exception as error:
            if "UndefinedTable" in type(error).__name__ or "does not exist" in str(error):
                raise Unavailable("the read models are not built yet: start the projections") from None
            raise

    def position(self, projection: str) -> int:
        with self.cursor() as cur:
            return self._position(cur, projection)

    def _position(self, cur: psycopg.Cursor[Any], projection: str) -> int:
        cur.execute(
            sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                self.table(f"rm_{projection}_tracking")),
            (self.application_name,),
        )
        row = cur.fetchone()
        return row["notification_id"] if row else 0

    def _position_or_zero(self, projection: str) -> int:
        try:
            return self.position(projection)
        except Unavailable:  # not created yet: its runner is starting
            return 0

    def wait_for(self, projection: str, position: int | None, timeout: float = 5.0) -> int:
        """Blocks until ``projection`` has processed ``position``; returns its position."""
        current = self._position_or_zero(projection)
        if position is None or current >= position:
            return current
        bound = timeout if math.isfinite(timeout) else MAX_WAIT  # NaN compares false: it waited for ever
        deadline = time.monotonic() + min(max(bound, 0.0), MAX_WAIT)
        pause = 0.005
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReadModelBehind(
                    f"the {projection} read model is at {current}, not yet at {position}: retry shortly")
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)
            current = self._position_or_zero(projection)
            if current >= position:
                return current

    def fetch(
        self, projection: str, query: sql.Composable, params: list[Any] | tuple[Any, ...],
        *, wait_for: int | None = None, timeout: float = 5.0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Rows of ``query`` and the read model's position (the rows are at least that
        recent), after waiting for ``wait_for`` if given."""
        if wait_for is not None:
            self.wait_for(projection, wait_for, timeout)
        with self.cursor() as cur:
            position = self._position(cur, projection)
            cur.execute(query, params)
            return list(cur.fetchall()), position
