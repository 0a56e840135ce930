"""Applies a batch of events to a projection's rows inside the caller's transaction.

Rows the batch touches are read once, evolved in memory event by event, and written once:
changed rows upserted, removed rows deleted, counters moved by the difference between
what the rows counted before the batch and what they count after it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from psycopg import Cursor, sql

from projections.projection import Projection, Row
from projections.table import Table

_MISSING = object()


def apply_batch(
    cur: Cursor[Any], projection: Projection, schema: str, suffix: str, events: Sequence[Any]
) -> int:
    """Applies ``events`` (domain events, log order); returns how many had a handler."""
    routed = [(event, projection.handler_for(event)) for event in events]
    routed = [(event, found) for event, found in routed if found is not None]
    if not routed:
        return 0
    keys: dict[Table, set[Any]] = defaultdict(set)
    for event, (table, _handler) in routed:
        keys[table].add(event.originator_id)
    before: dict[Table, dict[Any, Row]] = {}
    for table, wanted in keys.items():
        before[table] = {row[table.key[0]]: row for row in table.select_keys(cur, schema, suffix, list(wanted))}
    after: dict[Table, dict[Any, Row | None]] = {table: dict(rows) for table, rows in before.items()}
    for event, (table, handler) in routed:
        rows = after[table]
        rows[event.originator_id] = handler(projection, event, rows.get(event.originator_id))
    for table in keys:
        changed = [row for key, row in after[table].items() if row is not None and row != before[table].get(key)]
        removed = [key for key, row in after[table].items() if row is None and key in before[table]]
        table.delete_keys(cur, schema, suffix, removed)
        table.upsert(cur, schema, suffix, changed)
    if projection.counters is not None:
        _move_counters(cur, projection, schema, suffix, before, after)
    return len(routed)


def _move_counters(
    cur: Cursor[Any], projection: Projection, schema: str, suffix: str,
    before: dict[Table, dict[Any, Row]], after: dict[Table, dict[Any, Row | None]],
) -> None:
    counters = projection.counters
    assert counters is not None
    delta: Counter[tuple[Any, ...]] = Counter()
    for table, rows in after.items():
        for key, new in rows.items():
            old = before[table].get(key)
            if old == new:
                continue
            if old is not None:
                delta.subtract(projection.counts(table, old))
            if new is not None:
                delta.update(projection.counts(table, new))
    moved = [(key, n) for key, n in delta.items() if n]
    if not moved:
        return
    key_names = counters.key
    (value_name,) = [name for name in counters.column_names if name not in key_names]
    counters.upsert(
        cur, schema, suffix,
        ({**dict(zip(key_names, key, strict=True)), value_name: n} for key, n in sorted(moved)),
        add=True,
    )
    # A counter back at zero is removed, so live and rebuilt tables hold the same rows.
    condition = sql.SQL(" AND ").join(
        sql.SQL("{} = ANY(%s)").format(sql.Identifier(name)) for name in key_names
    )
    cur.execute(
        sql.SQL("DELETE FROM {}.{} WHERE {} = 0 AND ").format(
            sql.Identifier(schema), sql.Identifier(counters.physical(suffix)), sql.Identifier(value_name))
        + condition,
        [sorted({key[i] for key, _ in moved}) for i in range(len(key_names))],
    )
