"""Opaque cursors for keyset pagination over a stable sort with an id tie-break."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
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
    except (ValueError, TypeError):
        decoded = None
    if not isinstance(decoded, list) or len(decoded) != size + 1 or decoded[0] != kind:
        raise InvalidInput("the cursor does not belong to this list", [Problem("cursor", "invalid cursor")])
    return decoded[1:]


def after(columns: Sequence[tuple[str, str]], values: Sequence[Any] | None, *, descending: bool = False,
          alias: str = "") -> tuple[sql.Composable, list[Any]]:
    """``AND (a, b) > (%s::t, %s::t)``: the rows after the cursor in the sort order."""
    if values is None:
        return sql.SQL(""), []
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
