"""Where a projection is in the log: one row in its own tracking table.

The table has eventsourcing's tracking shape (``application_name``, ``notification_id``)
and belongs to the projection (``rm_<name>_tracking``), so a rebuild swaps it together
with the view tables. Writes are compare-and-set: a writer that is not where it thinks
it is (a second runner, a swapped rebuild) fails and rolls back its whole batch.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor, sql

from projections.table import Table


class PositionMoved(Exception):
    """The stored position is not the one this writer started its batch from."""


def tracking_table(projection_name: str) -> Table:
    return Table(
        name=f"rm_{projection_name}_tracking",
        columns=(("application_name", "text"), ("notification_id", "bigint NOT NULL")),
        key=("application_name",),
    )


def ensure(cur: Cursor[Any], table: Table, schema: str, suffix: str, application_name: str) -> None:
    table.create(cur, schema, suffix)
    cur.execute(
        sql.SQL("INSERT INTO {}.{} VALUES (%s, 0) ON CONFLICT DO NOTHING").format(
            sql.Identifier(schema), sql.Identifier(table.physical(suffix))),
        (application_name,),
    )


def read(cur: Cursor[Any], table: Table, schema: str, suffix: str, application_name: str) -> int | None:
    cur.execute(
        sql.SQL("SELECT notification_id FROM {}.{} WHERE application_name = %s").format(
            sql.Identifier(schema), sql.Identifier(table.physical(suffix))),
        (application_name,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return row["notification_id"] if isinstance(row, dict) else row[0]


def move(
    cur: Cursor[Any], table: Table, schema: str, suffix: str, application_name: str, old: int, new: int
) -> None:
    cur.execute(
        sql.SQL("UPDATE {}.{} SET notification_id = %s WHERE application_name = %s AND notification_id = %s")
        .format(sql.Identifier(schema), sql.Identifier(table.physical(suffix))),
        (new, application_name, old),
        prepare=True,
    )
    if cur.rowcount != 1:
        raise PositionMoved(f"{table.name}: expected position {old}")
