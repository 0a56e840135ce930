"""Runs one projection for ever: exactly one active runner per projection across replicas.

A runner opens a dedicated connection and tries a session-level advisory lock named after
the projection. Without it, it stands by and tries again; with it, it follows the log in
batches on that same connection and LISTENs there for new events (polling as a fallback).
If the connection dies, PostgreSQL releases the lock, another runner takes over, and this
one reconnects with backoff and stands by. Nothing stops it for good but ``stop``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from application.backoff import Backoff
from projections.follow import Step, check_batch_size, ensure_tables, lock_key, step
from projections.log import EventLog
from projections.projection import Projection

log = logging.getLogger(__name__)


class ProjectionRunner:
    def __init__(
        self, projection: Projection, event_log: EventLog, *, batch_size: int = 1000,
        idle_wait: float = 0.5, standby_wait: float = 1.0, max_backoff: float = 10.0,
        batch_interval: float = 0.0,
    ) -> None:
        self.projection = projection
        self.log = event_log
        self.batch_size = check_batch_size(batch_size)
        self.idle_wait = idle_wait
        # Under load, at most one batch per interval: events gather into bigger batches, so
        # a busy log costs a few transactions a second, not one per event. On a quiet log
        # the first event after a pause is still applied at once.
        self.batch_interval = batch_interval
        self._last_step = 0.0
        self.standby_wait = standby_wait
        self.backoff = Backoff(0.1, max_backoff)
        self.is_leader = False
        self.position: int | None = None
        self.handled = 0
        self.batches = 0  # that read at least one event
        self.steps = 0  # that wrote: read events or moved the position
        self.errors = 0
        self.backend_pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ProjectionRunner:
        self._thread = threading.Thread(target=self.run, name=f"projection-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Blocks until ``stop``: lead when the lock is free, stand by otherwise, retry errors."""
        while not self._stop.is_set():
            try:
                with self.log.connect(f"skillbase-projection:{self.name}") as conn:
                    self.backend_pid = conn.info.backend_pid
                    self._serve(conn)
            except Exception as error:  # noqa: BLE001 - a runner never stops for good
                self.errors += 1
                delay = self.backoff.next()
                log.warning("projection %s: %s; retrying in %.1fs", self.name, error, delay)
                self._stop.wait(delay)
            finally:
                self.is_leader = False

    # -- one connection --------------------------------------------------------------------

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        key = lock_key(self.log.schema, f"projection/{self.name}")
        while not self._stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (key,)).fetchone()
            if row and row["locked"]:
                break
            self.backoff.reset()  # standing by is healthy
            self._stop.wait(self.standby_wait)
        else:
            return
        self.is_leader = True
        log.info("projection %s: leading", self.name)
        ensure_tables(conn, self.log, self.projection)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.log.channel)))
        while not self._stop.is_set():
            result = self.step(conn)
            self.backoff.reset()
            if result.read < self.batch_size:
                self._wait_for_news(conn)

    def step(self, conn: psycopg.Connection[Any]) -> Step:
        began = time.monotonic()
        result = step(conn, self.log, self.projection, batch_size=self.batch_size)
        if result.read or result.position != self.position:
            # Pacing counts every step that wrote, also one that only moved the position
            # with the log: a read model none of whose events are arriving (the catalog,
            # under a stream of commands) would otherwise commit once per saved command.
            self._last_step = began
            self.steps += 1
        if result.read:
            self.batches += 1
        self.position = result.position
        self.handled += result.handled
        return result

    def _wait_for_news(self, conn: psycopg.Connection[Any]) -> None:
        for _ in conn.notifies(timeout=self.idle_wait, stop_after=1):
            break
        pause = self._last_step + self.batch_interval - time.monotonic()
        if pause > 0:
            self._stop.wait(pause)
        for _ in conn.notifies(timeout=0):  # drain: one pull serves them all
            pass
