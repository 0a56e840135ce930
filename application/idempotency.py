"""Stored responses of commands sent with an ``Idempotency-Key`` (ADR 0006).

One row per (user, key): the request's fingerprint and, once the command succeeded, the
response it got. The row is inserted *before* the command runs, in a transaction that
stays open until the response is stored, so a concurrent duplicate waits on the row lock
and then replays the stored response instead of running the command a second time. A
command that fails rolls the row back: nothing happened, so the key stays unused.

A duplicate waits for the first attempt at most ``IN_PROGRESS_WAIT``, then gets
``KeyInProgress`` (409, retry shortly): each waiting duplicate holds one of the API's
command threads, and a client retrying a slow command used to take every one of them.

The command's own events commit in eventsourcing's transaction, just before this one. If
the process dies between the two commits the row is gone and a retry runs the command
again; commands are written to make that retry harmless (the instance id of a start is
derived from the key, repeated claims and pins change nothing, and a completion or
cancellation already made by the same user is recognised and answered as a success).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

TABLE = "http_idempotency"
KEEP = timedelta(days=7)
IN_PROGRESS_WAIT = "1s"  # PostgreSQL's lock_timeout while a duplicate waits for the first attempt


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    headers: dict[str, str]
    body: bytes


class KeyReused(Exception):
    """The key was used before with a different request."""


class KeyInProgress(Exception):
    """A request with this key is still running: its answer is not known yet."""


@dataclass
class Slot:
    """What ``IdempotencyStore.claim`` hands the caller: a response to replay, or the duty
    to run the command and ``save`` its response."""

    replay: StoredResponse | None
    _connection: psycopg.Connection | None = None
    _table: sql.Composable | None = None
    _key: tuple[str, str] = ("", "")
    saved: bool = field(default=False)

    def save(self, status: int, headers: dict[str, str], body: bytes) -> None:
        assert self._connection is not None and self._table is not None
        self._connection.execute(
            sql.SQL("UPDATE {} SET status = %s, headers = %s, body = %s WHERE user_id = %s AND key = %s").format(
                self._table
            ),
            (status, Jsonb(headers), body, *self._key),
        )
        self.saved = True


class IdempotencyStore:
    def __init__(self, pool: ConnectionPool, schema: str = "") -> None:
        self._pool = pool
        self._table = sql.Identifier(schema, TABLE) if schema else sql.Identifier(TABLE)

    def create_table(self) -> None:
        # Two replicas starting together would race in CREATE TABLE IF NOT EXISTS (a duplicate
        # key in pg_type kills the loser's startup): one at a time, under a transaction lock.
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext('skillbase-workflow/http_idempotency'))")
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " user_id text NOT NULL, key text NOT NULL, fingerprint text NOT NULL,"
                    " status integer, headers jsonb, body bytea,"
                    " created_at timestamptz NOT NULL DEFAULT now(),"
                    " PRIMARY KEY (user_id, key))"
                ).format(self._table)
            )

    def purge(self, older_than: timedelta = KEEP) -> int:
        with self._pool.connection() as connection:
            cursor = connection.execute(
                sql.SQL("DELETE FROM {} WHERE created_at < now() - %s").format(self._table), (older_than,)
            )
            return cursor.rowcount

    @contextmanager
    def claim(self, user_id: str, key: str, fingerprint: str) -> Iterator[Slot]:
        """Replays the stored response of (user, key), or holds the key while the caller
        runs the command. Raises ``KeyReused`` when the key came with another request."""
        with self._pool.connection() as connection, connection.transaction():
            # Only this transaction's statements: the insert below, and the update of the row it holds.
            connection.execute(f"SET LOCAL lock_timeout = '{IN_PROGRESS_WAIT}'")
            try:
                inserted = connection.execute(
                    sql.SQL(
                        "INSERT INTO {} (user_id, key, fingerprint) VALUES (%s, %s, %s)"
                        " ON CONFLICT DO NOTHING RETURNING 1"
                    ).format(self._table),
                    (user_id, key, fingerprint),
                ).fetchone()
            except psycopg.errors.LockNotAvailable:
                raise KeyInProgress(key) from None
            if inserted is None:
                yield Slot(replay=self._stored(connection, user_id, key, fingerprint))
                return
            slot = Slot(replay=None, _connection=connection, _table=self._table, _key=(user_id, key))
            yield slot
            if not slot.saved:
                raise RuntimeError("an idempotent command ended without a stored response")

    def _stored(self, connection: psycopg.Connection, user_id: str, key: str, fingerprint: str) -> StoredResponse:
        row = connection.execute(
            sql.SQL("SELECT fingerprint, status, headers, body FROM {} WHERE user_id = %s AND key = %s").format(
                self._table
            ),
            (user_id, key),
        ).fetchone()
        if row is None or row[1] is None:  # pragma: no cover - the holder committed a response or rolled back
            raise RuntimeError("idempotency record vanished")
        if row[0] != fingerprint:
            raise KeyReused(key)
        return StoredResponse(fingerprint=row[0], status=row[1], headers=dict(row[2] or {}), body=bytes(row[3]))
