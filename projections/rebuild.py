"""Rebuild a read model from zero without taking the old one offline.

The new tables (``…__new``) are filled from the start of the log without secondary
indexes, indexed, caught up again, and then switched in one transaction: it locks the
live tracking table first (waiting for the live runner's batch in flight, and holding
off its next one), catches up the last events, drops the old tables and renames the new
ones, indexes, constraint and tracking row included, into place.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from projections import position as positions
from projections.follow import Batch, Step, check_batch_size, ensure_tables, lock_key, read_batch, step
from projections.log import EventLog
from projections.projection import Projection

NEW = "__new"

Progress = Callable[["RebuildProgress"], None]


@dataclass(frozen=True)
class RebuildProgress:
    name: str
    events: int
    position: int
    head: int
    seconds: float
    phase: str

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class RebuildBusy(Exception):
    """Another rebuild of the same projection is running."""


def rebuild(
    event_log: EventLog, projection: Projection, *, batch_size: int = 5000,
    progress: Progress | None = None, switch: bool = True, suffix: str = NEW,
) -> RebuildProgress:
    """Builds ``projection`` into new tables from zero and (with ``switch``) puts them in place."""
    check_batch_size(batch_size)
    started = time.perf_counter()
    events = 0

    def report(result: Step, phase: str) -> RebuildProgress:
        snapshot = RebuildProgress(projection.name, events, result.position, result.head,
                                   time.perf_counter() - started, phase)
        if progress is not None:
            progress(snapshot)
        return snapshot

    with event_log.connect(f"skillbase-rebuild:{projection.name}") as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(%s) AS locked",
                            (lock_key(event_log.schema, f"rebuild/{projection.name}"),)).fetchone()["locked"]:
            raise RebuildBusy(f"a rebuild of {projection.name} is already running")
        drop(conn, event_log, projection, suffix)
        ensure_tables(conn, event_log, projection, suffix, with_indexes=False)
        for batch in _read_ahead(event_log, projection, batch_size):
            result = step(conn, event_log, projection, suffix=suffix, batch=batch)
            events += result.read
            last = report(result, "replay")
        while True:  # what arrived meanwhile
            result = step(conn, event_log, projection, suffix=suffix, batch_size=batch_size)
            events += result.read
            if result.read < batch_size:
                break
        with conn.transaction(), conn.cursor() as cur:
            for table in projection.all_tables():
                table.create_indexes(cur, event_log.schema, suffix)
                cur.execute(sql.SQL("ANALYZE {}.{}").format(
                    sql.Identifier(event_log.schema), sql.Identifier(table.physical(suffix))))
        last = report(result, "indexed")
        if not switch:
            return last
        ensure_tables(conn, event_log, projection)
        with conn.transaction(), conn.cursor() as cur:
            tracking = positions.tracking_table(projection.name)
            for table in (tracking, *projection.all_tables()):
                cur.execute(sql.SQL("LOCK TABLE {}.{} IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(event_log.schema), sql.Identifier(table.physical())))
            while True:
                result = step(conn, event_log, projection, suffix=suffix, batch_size=batch_size)
                events += result.read
                if result.read < batch_size:
                    break
            for table in (tracking, *projection.all_tables()):
                table.drop(cur, event_log.schema)
                table.rename(cur, event_log.schema, suffix)
        return report(result, "switched")


def _read_ahead(event_log: EventLog, projection: Projection, size: int) -> Iterator[Batch]:
    """Batches from the start of the log, read and decoded by a second thread (on its own
    connection) while this one writes the previous batch."""
    batches: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            with event_log.connect(f"skillbase-rebuild-read:{projection.name}") as conn, conn.cursor() as cur:
                after = 0
                while not stop.is_set():
                    batch = read_batch(cur, event_log, projection, after, size)
                    batches.put(batch)
                    if not batch.full:
                        break
                    after = batch.next_position
            batches.put(None)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            batches.put(error)

    reader = threading.Thread(target=produce, name=f"rebuild-read-{projection.name}", daemon=True)
    reader.start()
    try:
        while (item := batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                batches.get_nowait()
            reader.join(0.05)


def drop(conn: psycopg.Connection[Any], event_log: EventLog, projection: Projection, suffix: str) -> None:
    """Removes the tables of a build under ``suffix`` (a leftover or a finished check)."""
    with conn.transaction(), conn.cursor() as cur:
        for table in (positions.tracking_table(projection.name), *projection.all_tables()):
            table.drop(cur, event_log.schema, suffix)
