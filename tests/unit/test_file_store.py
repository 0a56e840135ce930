"""The file store on a plain temporary directory: limits, types, hashes, names, partials."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from application.files import PosixFileStore, extension_for, media_type_for
from application.files import store as store_module
from domain.errors import Conflict, InvalidInput, NotFound, TooLarge, Unavailable, Unsupported

ALLOWED = ("image/jpeg", "image/png", "application/pdf", "text/plain")


@pytest.fixture
def store(tmp_path: Path) -> PosixFileStore:
    return PosixFileStore(tmp_path, max_bytes=1000, allowed_types=ALLOWED)


def visible(store: PosixFileStore) -> list[str]:
    return sorted(os.listdir(store.directory))


def test_a_written_file_has_its_size_sha256_and_uuid_name(store, tmp_path):
    stored = store.write([b"evidence ", b"", b"bytes"], "text/plain")

    assert stored.size == len(b"evidence bytes")
    assert stored.sha256 == hashlib.sha256(b"evidence bytes").hexdigest()
    assert stored.media_type == "text/plain" and stored.extension == "txt"
    assert stored.path == tmp_path / "skillbase" / "workflow" / f"{stored.file_id}.txt"
    with store.open(stored.file_id, "txt") as opened:
        assert opened.read() == b"evidence bytes"
    assert visible(store) == [f"{stored.file_id}.txt"]


def test_the_media_type_is_normalised_and_gives_the_extension(store):
    stored = store.write([b"\xff\xd8"], "Image/JPEG; q=1")

    assert (stored.media_type, stored.extension) == ("image/jpeg", "jpg")
    assert stored.path.name.endswith(".jpg")


def test_a_chosen_file_id_is_used_and_cannot_be_written_twice(store):
    file_id = uuid4()
    assert store.write([b"one"], "text/plain", file_id=file_id).file_id == file_id

    with pytest.raises(Conflict):
        store.write([b"two"], "text/plain", file_id=file_id)
    with store.open(file_id, "txt") as opened:
        assert opened.read() == b"one"


def publish_twice(tmp_path: Path) -> tuple[Path, Path]:
    """Publishes one partial, then another under the same final name (as two writers of
    one file id racing past the store's first check would); returns the final and the
    refused partial."""
    final = tmp_path / "file.txt"
    first, second = tmp_path / ".first.partial", tmp_path / ".second.partial"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    store_module._publish(first, final)
    with pytest.raises(Conflict, match="already exists"):
        store_module._publish(second, final)
    return final, second


def test_the_final_name_comes_from_one_rename_that_refuses_a_taken_name(tmp_path, monkeypatch):
    """On Linux with glibc 2.28+ the store publishes with renameat2(RENAME_NOREPLACE): no
    hard link, and a taken name is refused without touching the file that holds it.
    Elsewhere the store must have found no renameat2 (the two tests below cover the
    fallbacks it then uses)."""
    libc, version = platform.libc_ver()
    glibc_228 = sys.platform == "linux" and libc == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 28)
    assert (store_module._RENAMEAT2 is not None) == glibc_228
    if not glibc_228:
        return

    def no_link(*_args):
        raise AssertionError("published through a hard link")

    monkeypatch.setattr(store_module.os, "link", no_link)
    final, refused = publish_twice(tmp_path)
    assert final.read_bytes() == b"one"
    assert refused.read_bytes() == b"two"  # left for the writer to abort
    assert sorted(p.name for p in tmp_path.iterdir()) == [".second.partial", "file.txt"]


def test_without_renameat2_a_link_publishes_and_refuses_a_taken_name(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_RENAMEAT2", None)
    final, refused = publish_twice(tmp_path)
    assert final.read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".second.partial", "file.txt"]


def test_without_renameat2_or_links_a_rename_publishes_and_still_refuses_a_taken_name(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_RENAMEAT2", None)

    def no_links(*_args):
        raise OSError(errno.EPERM, "links not supported here")

    monkeypatch.setattr(store_module.os, "link", no_links)
    final, refused = publish_twice(tmp_path)
    assert final.read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".second.partial", "file.txt"]


def test_a_partial_left_by_a_crashed_writer_does_not_block_a_retry_with_the_same_id(store):
    file_id = uuid4()
    store.directory.mkdir(parents=True, exist_ok=True)
    # what a writer killed mid-write under an earlier naming would leave, and one of this kind
    (store.directory / f".{file_id}.txt.partial").write_bytes(b"cra")
    (store.directory / f".{file_id}.txt.0123456789ab.partial").write_bytes(b"crashe")
    stored = store.write([b"complete"], "text/plain", file_id=file_id)
    assert stored.file_id == file_id
    with store.open(file_id, "txt") as opened:
        assert opened.read() == b"complete"
    assert len(store.partials(timedelta(0))) == 2  # the crashed ones, left for housekeeping


def test_a_file_at_the_limit_is_kept_one_byte_more_is_refused_and_removed(store):
    assert store.write([b"x" * 600, b"y" * 400], "text/plain").size == 1000

    with pytest.raises(TooLarge, match="1000 bytes"):
        store.write([b"x" * 600, b"y" * 401], "text/plain")
    assert len(visible(store)) == 1  # no partial left behind


def test_an_unlisted_type_is_refused_before_anything_is_written(store, tmp_path):
    with pytest.raises(Unsupported, match="video/mp4"):
        store.write([b"movie"], "video/mp4")
    with pytest.raises(Unsupported):
        store.write([b"?"], "application/x-sh")
    assert not (tmp_path / "skillbase").exists()


def test_a_failing_stream_leaves_nothing(store):
    def broken():
        yield b"half"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write(broken(), "text/plain")
    assert visible(store) == []


@pytest.mark.parametrize(
    ("file_id", "extension"),
    [
        ("../../etc/passwd", "txt"),
        ("../../../etc/passwd", ""),
        (str(uuid4()), "../../etc/passwd"),
        (str(uuid4()), "txt/../../x"),
        (str(uuid4()), "TXT"),
        (str(uuid4()), "jpeg"),  # a spelling we understand but never write
        (str(uuid4()), ""),
        ("", "txt"),
        (None, "txt"),
        (str(uuid4()) + "/x", "txt"),
    ],
)
def test_names_that_are_not_a_uuid_and_a_stored_extension_are_refused(store, file_id, extension):
    for call in (store.path_for, store.open, store.exists, store.delete):
        with pytest.raises(InvalidInput):
            call(file_id, extension)


def test_any_spelling_of_a_uuid_gives_the_same_canonical_path(store):
    file_id = uuid4()
    expected = store.directory / f"{file_id}.pdf"

    assert store.path_for(file_id, "pdf") == expected
    assert store.path_for(str(file_id).upper(), "pdf") == expected
    assert store.path_for(file_id.hex, "pdf") == expected


def test_partials_and_foreign_names_are_invisible_to_list_files(store):
    kept = store.write([b"kept"], "text/plain")
    directory = store.directory
    (directory / f".{uuid4()}.txt.partial").write_bytes(b"crashed")
    (directory / "notes.txt").write_bytes(b"stray")
    (directory / f"{uuid4()}.exe").write_bytes(b"stray")
    (directory / f"{str(uuid4()).upper()}.txt").write_bytes(b"stray")
    (directory / f"{uuid4()}.txt").mkdir()

    listed = list(store.list_files())

    assert [(f.file_id, f.extension, f.size) for f in listed] == [(kept.file_id, "txt", 4)]
    assert listed[0].mtime.tzinfo is not None


def test_sweep_removes_only_stale_partials(store):
    store.write([b"kept"], "text/plain")
    stale = store.directory / f".{uuid4()}.txt.partial"
    fresh = store.directory / f".{uuid4()}.png.partial"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    assert store.sweep_partials(timedelta(minutes=10)) == [stale]
    assert fresh.exists() and len(list(store.list_files())) == 1


def test_exists_and_delete(store):
    stored = store.write([b"gone soon"], "text/plain")

    assert store.exists(stored.file_id, "txt")
    assert store.delete(stored.file_id, "txt") is True
    assert not store.exists(stored.file_id, "txt")
    assert store.delete(stored.file_id, "txt") is False
    with pytest.raises(NotFound):
        store.open(stored.file_id, "txt")


def test_a_missing_root_is_unavailable_and_never_created(tmp_path):
    root = tmp_path / "not-mounted"
    store = PosixFileStore(root, 1000, ALLOWED)

    for attempt in (
        lambda: store.write([b"x"], "text/plain"),
        lambda: store.open(uuid4(), "txt"),
        lambda: store.exists(uuid4(), "txt"),
        lambda: list(store.list_files()),
        lambda: store.sweep_partials(timedelta(0)),
    ):
        with pytest.raises(Unavailable, match="not-mounted"):
            attempt()
    assert not root.exists()


def test_a_root_that_must_be_a_mount_point_is_unavailable_when_it_is_not(tmp_path):
    store = PosixFileStore(tmp_path, 1000, ALLOWED, require_mount=True)

    with pytest.raises(Unavailable, match="not mounted"):
        store.write([b"x"], "text/plain")
    assert not (tmp_path / "skillbase").exists()


def test_allowed_types_must_be_in_the_table(tmp_path):
    with pytest.raises(ValueError, match="application/x-unknown"):
        PosixFileStore(tmp_path, 1000, ("text/plain", "application/x-unknown"))


def test_write_async_streams_in_batches_and_matches_the_sync_result(tmp_path):
    store = PosixFileStore(tmp_path, 5 * 1024 * 1024, ALLOWED)
    chunks = [os.urandom(64 * 1024) for _ in range(40)]

    async def body():
        for chunk in chunks:
            yield chunk

    stored = asyncio.run(store.write_async(body(), "application/pdf"))

    assert stored.size == 40 * 64 * 1024
    assert stored.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert stored.path.read_bytes() == b"".join(chunks)


def test_write_async_refuses_an_oversized_body_without_reading_it_all(tmp_path):
    store = PosixFileStore(tmp_path, 100_000, ALLOWED)
    read = 0

    async def endless():
        nonlocal read
        while True:
            read += 1
            yield b"z" * 10_000

    with pytest.raises(TooLarge):
        asyncio.run(store.write_async(endless(), "text/plain"))
    assert read == 11
    assert os.listdir(store.directory) == []


def test_a_cancelled_async_write_leaves_nothing(tmp_path):
    store = PosixFileStore(tmp_path, 10_000_000, ALLOWED)

    async def slow():
        yield b"a" * 2_000_000
        await asyncio.sleep(10)
        yield b"never"

    async def main():
        task = asyncio.create_task(store.write_async(slow(), "text/plain"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert os.listdir(store.directory) == []


@pytest.mark.parametrize(
    ("media_type", "extension"),
    [
        ("image/jpeg", "jpg"),
        ("image/png", "png"),
        ("image/webp", "webp"),
        ("application/pdf", "pdf"),
        ("video/mp4", "mp4"),
        ("text/plain", "txt"),
    ],
)
def test_media_types_and_extensions_map_both_ways(media_type, extension):
    assert extension_for(media_type) == extension
    assert media_type_for(extension) == media_type
    assert media_type_for("." + extension.upper()) == media_type


def test_unknown_types_and_extensions_are_unsupported():
    with pytest.raises(Unsupported):
        extension_for("application/x-msdownload")
    with pytest.raises(Unsupported):
        media_type_for("exe")
    assert media_type_for("jpeg") == "image/jpeg"


def test_every_default_allowed_type_is_in_the_table():
    from application.settings import Settings

    for media_type in Settings().files_allowed_types:
        assert extension_for(media_type)


def test_the_housekeeping_grace_is_a_duration_and_a_huge_one_is_refused_not_a_crash():
    import argparse

    from interface.commands.files import duration

    assert duration("90s") == timedelta(seconds=90) and duration("7d") == timedelta(days=7)
    with pytest.raises(argparse.ArgumentTypeError, match="too long"):
        duration("99999999999999999d")
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        duration("soon")
