"""``Range: bytes=...`` for downloads (RFC 9110 §14): one range, or the whole file.

A single range is served as 206; a range that starts past the end is unsatisfiable (416).
Anything this parser does not take on — other units, several ranges, a malformed header —
is ignored, as RFC 9110 allows, and the whole file is sent (200).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class ByteRange(NamedTuple):
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(Exception):
    """The range lies wholly outside a file of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the file has {size} bytes")
        self.size = size


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks for in a file of ``size`` bytes; ``None`` for the
    whole file. Raises ``Unsatisfiable`` for a well-formed range the file cannot serve."""
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in specs:
        return None
    found = _SPEC.match(specs)
    if found is None:
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = _at_most(last, size)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(size)
        return ByteRange(size - suffix, size - 1)
    if last and _magnitude(last) < _magnitude(first):
        return None  # invalid syntax: ignored
    start = _at_most(first, size)
    end = _at_most(last, size) if last else size - 1
    if start >= size:
        raise Unsatisfiable(size)
    return ByteRange(start, min(end, size - 1))


def _magnitude(digits: str) -> tuple[int, str]:
    """Orders decimal strings of any length by value, without converting them."""
    significant = digits.lstrip("0") or "0"
    return len(significant), significant


def _at_most(digits: str, limit: int) -> int:
    """``min(int(digits), limit)``, for numbers of any length: beyond the file's size every
    number means the same, and ``int`` refuses strings of more than 4,300 digits."""
    length, significant = _magnitude(digits)
    if (length, significant) > _magnitude(str(limit)):
        return limit
    return min(int(significant), limit)


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """``If-Range``: honour the range only while the validator is still the file's ETag.
    Dates are not used (the ETag is the strong validator here), so a date means: whole file."""
    return if_range is None or if_range.strip() == etag
