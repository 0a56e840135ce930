"""The download Range parser: one byte range, or the whole file; 416 only when unsatisfiable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interface.http.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 99)),
        ("bytes=100-", 1000, ByteRange(100, 999)),
        ("bytes=-100", 1000, ByteRange(900, 999)),
        ("bytes=-5000", 1000, ByteRange(0, 999)),  # a suffix longer than the file: all of it
        ("bytes=990-5000", 1000, ByteRange(990, 999)),  # the end is clamped
        ("bytes=999-999", 1000, ByteRange(999, 999)),
        ("Bytes = 5 - 9", 1000, ByteRange(5, 9)),
        ("bytes=0-" + "9" * 5000, 1000, ByteRange(0, 999)),  # longer than int() takes: clamped
        ("bytes=-" + "9" * 5000, 1000, ByteRange(0, 999)),
        ("bytes=0005-0009", 1000, ByteRange(5, 9)),
    ],
)
def test_a_single_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "items=0-1", "bytes=0-1,5-9", "bytes=abc", "bytes=-", "bytes=9-5", "bytes 0-1", "bytes=--1",
     "bytes=" + "9" * 5001 + "-" + "9" * 5000],
)
def test_what_is_not_one_byte_range_means_the_whole_file(header):
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=5000-6000", 1000),
                                              ("bytes=-0", 1000), ("bytes=0-", 0), ("bytes=-1", 0),
                                              ("bytes=" + "9" * 5000 + "-", 1000), ("bytes=-" + "0" * 5000, 1000)])
def test_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable) as raised:
        parse_range(header, size)
    assert raised.value.size == size


def test_content_range():
    assert ByteRange(0, 99).content_range(1000) == "bytes 0-99/1000"
    assert ByteRange(0, 99).length == 100


def test_if_range():
    assert if_range_allows(None, '"abc"')
    assert if_range_allows('"abc"', '"abc"')
    assert not if_range_allows('"old"', '"abc"')
    assert not if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", '"abc"')


@given(st.integers(0, 10_000), st.integers(0, 10**40), st.one_of(st.none(), st.integers(0, 10**40)))
def test_any_served_range_lies_inside_the_file(size, first, last):
    header = f"bytes={first}-{'' if last is None else last}"
    try:
        found = parse_range(header, size)
    except Unsatisfiable:
        assert first >= size
        return
    if found is not None:
        assert 0 <= found.start <= found.end < size
        assert found.start == first
