"""One active relay among replicas: a PostgreSQL session advisory lock on its own connection.

The lock lives as long as the connection: a relay that dies (or whose connection the
server drops) frees it, and a waiting replica takes over. The same connection LISTENs to
the event store's NOTIFY channel, so an idle relay wakes up when a command commits, and
every wait doubles as a heartbeat: a broken connection raises :class:`LeadershipLost`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import psycopg
from psycopg import sql

from application.database import LOCK_SESSION_KEEPALIVES
from interface.kafka.retrying import sleep_unless_stopped

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """The lock's connection broke: another replica may be publishing now."""


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory lock key for ``parts`` (schema, purpose, topic)."""
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    def __init__(self, connect_kwargs: dict[str, Any], key: int, channel: str | None = None) -> None:
        self._connect_kwargs = {**LOCK_SESSION_KEEPALIVES, **connect_kwargs, "autocommit": True}
        self.key = key
        self._channel = channel
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def try_acquire(self) -> bool:
        """Takes the lock if it is free; False when another session holds it."""
        if self.held:
            return True
        conn = await psycopg.AsyncConnection.connect(**self._connect_kwargs)
        try:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))).fetchone()
            if not (row and row[0]):
                await conn.close()
                return False
            if self._channel:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return True

    async def acquire(self, stop: asyncio.Event, poll: float) -> bool:
        """Waits until the lock is ours (True) or ``stop`` is set (False)."""
        waited = False
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    if waited:
                        log.info("relay leadership taken over", extra={"lock_key": self.key})
                    return True
            except psycopg.Error as error:
                log.warning("relay lock: database unavailable: %s", error)
            waited = True
            await sleep_unless_stopped(poll, stop)
        return False

    async def wait(self, timeout: float) -> None:
        """Returns on a NOTIFY from the event store or after ``timeout``; checks the lock."""
        conn = self._require()
        try:
            if self._channel:
                async for _ in conn.notifies(timeout=timeout, stop_after=1):
                    pass
            else:
                await asyncio.sleep(timeout)
            await conn.execute("SELECT 1")
        except psycopg.Error as error:
            await self.release()
            raise LeadershipLost(str(error)) from error

    async def check(self) -> None:
        conn = self._require()
        try:
            await conn.execute("SELECT 1")
        except psycopg.Error as error:
            await self.release()
            raise LeadershipLost(str(error)) from error

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close()  # the session ends: the lock is freed
            except psycopg.Error:
                pass

    def _require(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = None
            raise LeadershipLost("the lock connection is closed")
        return self._conn
