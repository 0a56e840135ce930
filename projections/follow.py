"""One step of following the log: read a batch, apply it, move the position, commit.

The rows, the counters and the position are written in one transaction: a step that
fails anywhere (a handler raises, the connection drops, the position moved under it)
leaves nothing behind, and the next step starts again from the stored position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from application.database import lock_key
from projections import position as positions
from projections.batch import apply_batch
from projections.log import EventLog
from projections.projection import Projection


@dataclass(frozen=True)
class Step:
    read: int
    """Events of the projection's topics read in this step."""
    handled: int
    position: int
    head: int

    @property
    def caught_up(self) -> bool:
        return self.position >= self.head


@dataclass(frozen=True)
class Batch:
    """Decoded events of a projection's topics after ``after``, their ids, and the head."""

    after: int
    events: list[Any]
    ids: list[int]
    head: int
    size: int

    @property
    def full(self) -> bool:
        return len(self.ids) == self.size

    @property
    def next_position(self) -> int:
        return self.ids[-1] if self.full else max([self.after, self.head, *self.ids[-1:]])


def read_batch(cur: psycopg.Cursor[Any], log: EventLog, projection: Projection, after: int, size: int) -> Batch:
    stored, ids, head = log.read(cur, after, projection.topics(), size)
    return Batch(after=after, events=log.decode(stored), ids=ids, head=head, size=size)


def check_batch_size(batch_size: int) -> int:
    """A batch reads at least one event: with none, every step would fail (an empty batch
    counts as full) and the read model retry for ever."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"a batch size is a whole number of events, at least 1, not {batch_size!r}")
    return batch_size


def step(
    conn: psycopg.Connection[Any], log: EventLog, projection: Projection, *, suffix: str = "",
    batch_size: int = 1000, batch: Batch | None = None,
) -> Step:
    """Applies the next batch (read here, or ``batch`` read ahead by the caller)."""
    check_batch_size(batch_size)
    tracking = positions.tracking_table(projection.name)
    with conn.transaction(), conn.cursor() as cur:
        current = positions.read(cur, tracking, log.schema, suffix, log.application_name)
        if current is None:
            raise positions.PositionMoved(f"{tracking.name} has no position for {log.application_name}")
        if batch is None:
            batch = read_batch(cur, log, projection, current, batch_size)
        elif batch.after != current:
            raise positions.PositionMoved(f"{tracking.name}: at {current}, batch read after {batch.after}")
        handled = apply_batch(cur, projection, log.schema, suffix, batch.events)
        new = batch.next_position
        if new != current:
            positions.move(cur, tracking, log.schema, suffix, log.application_name, current, new)
    return Step(read=len(batch.ids), handled=handled, position=new, head=batch.head)


def ensure_tables(conn: psycopg.Connection[Any], log: EventLog, projection: Projection, suffix: str = "",
                  *, with_indexes: bool = True) -> None:
    """Creates the projection's tables if missing (serialised across processes)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(log.schema, "ddl"),))
        for table in projection.all_tables():
            table.create(cur, log.schema, suffix, with_indexes=with_indexes)
        positions.ensure(cur, positions.tracking_table(projection.name), log.schema, suffix, log.application_name)


