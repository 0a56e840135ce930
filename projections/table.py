"""A read-model table: its columns, its key, its indexes, and the SQL that follows.

Every table lives in the event store's schema under a stable name (``rm_…``). A rebuild
creates the same table under a suffix (``rm_tasks__new``), fills it, indexes it, and
then renames it into place; names of the key constraint and indexes follow the table
name so that a renamed table is indistinguishable from one created in place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from psycopg import Cursor, sql
from psycopg.types.json import Jsonb

# Batches of at most this many rows are upserted straight from VALUES; bigger ones (a
# rebuild's) through COPY into a staging table.
SMALL_BATCH = 64

# A B-tree entry holds at most ~2,700 bytes: a text column in a key or an index keeps at most
# this many bytes of its value (no index here has more than two long text columns). Every
# value the service accepts fits: a user id of 255 characters is at most 1,020 bytes, an id,
# group or lane of 200 at most 800 (ADR 0005). Cutting is for events stored before that.
INDEXED_TEXT_BYTES = 1024


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...] = ("id",)
    indexes: tuple[str, ...] = ()
    """Index bodies after ``ON table``, e.g. ``(assignee, created_at, id) WHERE status = 'open'``."""
    json_columns: frozenset[str] = field(default=frozenset())
    indexed_text_columns: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        json = frozenset(name for name, kind in self.columns if kind.startswith("jsonb"))
        object.__setattr__(self, "json_columns", json)
        named = set(self.key).union(*(re.findall(r"[a-z_]+", body) for body in self.indexes))
        indexed = frozenset(name for name, kind in self.columns if kind.startswith("text") and name in named)
        object.__setattr__(self, "indexed_text_columns", indexed)

    def storable_row(self, row: Mapping[str, Any]) -> list[Any]:
        """The row's values in column order, each one PostgreSQL can store (``_storable``)."""
        return [_storable(row[name], self.json_columns, self.indexed_text_columns, name)
                for name in self.column_names]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def physical(self, suffix: str = "") -> str:
        return f"{self.name}{suffix}"

    # -- DDL -------------------------------------------------------------------------------

    def create(self, cur: Cursor[Any], schema: str, suffix: str = "", *, with_indexes: bool = True) -> None:
        name = self.physical(suffix)
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind)) for column, kind in self.columns
        )
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, CONSTRAINT {} PRIMARY KEY ({}))").format(
                sql.Identifier(schema), sql.Identifier(name), columns,
                sql.Identifier(f"{name}_pkey"), _names(self.key),
            )
        )
        if with_indexes:
            self.create_indexes(cur, schema, suffix)

    def index_names(self, suffix: str = "") -> list[str]:
        return [f"{self.physical(suffix)}_i{number}" for number in range(len(self.indexes))]

    def create_indexes(self, cur: Cursor[Any], schema: str, suffix: str = "") -> None:
        for index_name, body in zip(self.index_names(suffix), self.indexes, strict=True):
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ").format(
                    sql.Identifier(index_name), sql.Identifier(schema), sql.Identifier(self.physical(suffix))
                )
                + sql.SQL(body)  # bodies are constants of this package, never user input
            )

    def rename(self, cur: Cursor[Any], schema: str, from_suffix: str, to_suffix: str = "") -> None:
        """Renames the table, its key constraint and its indexes from one suffix to another."""
        old, new = self.physical(from_suffix), self.physical(to_suffix)
        cur.execute(sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
            sql.Identifier(schema), sql.Identifier(old), sql.Identifier(new)))
        cur.execute(sql.SQL("ALTER TABLE {}.{} RENAME CONSTRAINT {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(new), sql.Identifier(f"{old}_pkey"),
            sql.Identifier(f"{new}_pkey")))
        for old_index, new_index in zip(self.index_names(from_suffix), self.index_names(to_suffix), strict=True):
            cur.execute(sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                sql.Identifier(schema), sql.Identifier(old_index), sql.Identifier(new_index)))

    def drop(self, cur: Cursor[Any], schema: str, suffix: str = "") -> None:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
            sql.Identifier(schema), sql.Identifier(self.physical(suffix))))

    # -- rows ------------------------------------------------------------------------------

    def select_keys(self, cur: Cursor[Any], schema: str, suffix: str, keys: Sequence[Any]) -> list[dict[str, Any]]:
        """The current rows for ``keys`` (single-column keys only)."""
        (key,) = self.key
        cur.execute(
            sql.SQL("SELECT * FROM {}.{} WHERE {} = ANY(%s)").format(
                sql.Identifier(schema), sql.Identifier(self.physical(suffix)), sql.Identifier(key)),
            (list(keys),),
        )
        return list(cur.fetchall())

    def upsert(
        self, cur: Cursor[Any], schema: str, suffix: str, rows: Iterable[Mapping[str, Any]],
        *, add: bool = False,
    ) -> None:
        """Writes ``rows``: COPY into a session-local staging table, then one upsert from it.

        With ``add`` the non-key columns are counters: the stored value grows by the new one.
        """
        rows = list(rows)
        if not rows:
            return
        names = self.column_names
        if len(rows) <= SMALL_BATCH:  # a live batch: no staging table, one pipelined round trip
            cur.executemany(_upsert_values(self, schema, suffix, add, cur), [self.storable_row(row) for row in rows])
            return
        target = sql.Identifier(self.physical(suffix))
        stage = sql.Identifier(f"_stage_{self.name}")
        cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}.{})").format(
            stage, sql.Identifier(schema), target))
        cur.execute(sql.SQL("TRUNCATE {}").format(stage))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, _names(names))) as copy:
            for row in rows:
                copy.write_row(self.storable_row(row))
        updates = _updates(self, target, add)
        cur.execute(
            sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.Identifier(schema), target, _names(names), _names(names), stage, _names(self.key), updates),
        )

    def delete_keys(self, cur: Cursor[Any], schema: str, suffix: str, keys: Sequence[Any]) -> None:
        if not keys:
            return
        (key,) = self.key
        cur.execute(
            sql.SQL("DELETE FROM {}.{} WHERE {} = ANY(%s)").format(
                sql.Identifier(schema), sql.Identifier(self.physical(suffix)), sql.Identifier(key)),
            (list(keys),),
        )


def _storable(value: Any, json_columns: frozenset[str], indexed_text: frozenset[str], name: str) -> Any:
    """A value PostgreSQL can hold in column ``name``. What the service refuses today, an
    event stored before, or from another path, may still carry; a row that cannot be written
    would make the read model retry the same batch for ever. So a NUL character (text and
    jsonb refuse it) becomes U+FFFD, also inside JSON, where a non-finite number becomes
    null; and an indexed text keeps at most ``INDEXED_TEXT_BYTES`` bytes."""
    if value is None:
        return None
    if name in json_columns:
        return Jsonb(_storable_json(value))
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if name in indexed_text and len(value) > INDEXED_TEXT_BYTES // 4:
            value = value.encode()[:INDEXED_TEXT_BYTES].decode(errors="ignore")
    return value


def _storable_json(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if kind is dict:
        return {_storable_json(key) if type(key) is str else key: _storable_json(item) for key, item in value.items()}
    if kind is list:
        return [_storable_json(item) for item in value]
    if kind is float and not math.isfinite(value):
        return None
    return value


def _updates(table: Table, target: sql.Identifier, add: bool) -> sql.Composed:
    if add:
        return sql.SQL(", ").join(
            sql.SQL("{0} = {1}.{0} + EXCLUDED.{0}").format(sql.Identifier(n), target)
            for n in table.column_names if n not in table.key
        )
    return sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in table.column_names if n not in table.key
    )


@lru_cache(maxsize=256)
def _upsert_values_bytes(table: Table, schema: str, suffix: str, add: bool, encoding: str) -> bytes:
    target = sql.Identifier(table.physical(suffix))
    names = table.column_names
    query = sql.SQL("INSERT INTO {}.{} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(schema), target, _names(names), sql.SQL(", ").join(sql.Placeholder() * len(names)),
        _names(table.key), _updates(table, target, add))
    return query.as_string(None).encode(encoding)


def _upsert_values(table: Table, schema: str, suffix: str, add: bool, cur: Cursor[Any]) -> bytes:
    """``INSERT … VALUES (%s, …) ON CONFLICT … DO UPDATE``, composed once per table."""
    return _upsert_values_bytes(table, schema, suffix, add, cur.connection.info.encoding)


def _names(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)
