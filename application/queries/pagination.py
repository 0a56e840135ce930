"""Opaque cursors for keyset pagination over a stable sort with an id tie-break."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from domain.errors import InvalidInput, Problem

MAX_LIMIT = 500


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    position: int = 0
    """The read model's log position when the page was read."""
    extra: dict[str, Any] = field(default_factory=dict)


def clamp_limit(limit: int) -> int:
    if limit < 1:
        raise InvalidInput("limit must be at least 1", [Problem("limit", "must be at least 1")])
    return min(limit, MAX_LIMIT)


def encode_cursor(kind: str, values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v for v in values]
    raw = json.dumps([kind, *plain], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None, size: int) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (ValueError, TypeError, RecursionError):  # a cursor nested deep was "the body is not valid JSON"
        decoded = None
    if not isinstance(decoded, list) or len(decoded) != size + 1 or decoded[0] != kind:
        raise _invalid_cursor()
    return decoded[1:]


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(value)
    return datetime.fromisoformat(value)


def _uuid(value: Any) -> UUID:
    if not isinstance(value, str):
        raise TypeError(value)
    return UUID(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise ValueError(value)
    value.encode("utf-8")  # nor a lone surrogate: UnicodeEncodeError, a ValueError
    return value


def _integer(bits: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise ValueError(value)
        return value
    return parse


_CURSOR_VALUES: dict[str, Callable[[Any], Any]] = {
    "timestamptz": _timestamp, "uuid": _uuid, "text": _text, "int": _integer(32), "integer": _integer(32),
    "bigint": _integer(64),
}
"""How a cursor value is read back for each column type a list sorts by: a client can
send any JSON, and only a value of the column's type may reach the query (else a 422)."""


def _cursor_values(columns: Sequence[tuple[str, str]], values: Sequence[Any]) -> list[Any]:
    if len(values) != len(columns):
        raise _invalid_cursor()
    parsed = []
    for (_name, kind), value in zip(columns, values, strict=True):
        try:
            parsed.append(_CURSOR_VALUES[kind](value))
        except (ValueError, TypeError, OverflowError):
            raise _invalid_cursor() from None
    return parsed


def _invalid_cursor() -> InvalidInput:
    return InvalidInput("the cursor does not belong to this list", [Problem("cursor", "invalid cursor")])


def after(columns: Sequence[tuple[str, str]], values: Sequence[Any] | None, *, descending: bool = False,
          alias: str = "") -> tuple[sql.Composable, list[Any]]:
    """``AND (a, b) > (%s::t, %s::t)``: the rows after the cursor in the sort order.

    Each cursor value must be of its column's type (an ISO timestamp, a UUID, a string, an
    integer; never null), else the cursor is invalid: a 422, not a database error."""
    if values is None:
        return sql.SQL(""), []
    values = _cursor_values(columns, values)
    prefix = f"{alias}." if alias else ""
    left = sql.SQL(", ").join(sql.SQL(prefix) + sql.Identifier(name) for name, _kind in columns)
    right = sql.SQL(", ").join(sql.SQL("%s::" + kind) for _name, kind in columns)
    op = sql.SQL("<") if descending else sql.SQL(">")
    return sql.SQL(" AND ({}) {} ({})").format(left, op, right), list(values)


def page(kind: str, rows: list[dict[str, Any]], limit: int, sort: Sequence[str], position: int) -> Page:
    """Rows fetched with ``limit + 1``: the extra row only says there is a next page."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(kind, [rows[-1][name] for name in sort]) if more and rows else None
    return Page(items=rows, next_cursor=cursor, position=position)
