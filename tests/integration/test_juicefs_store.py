"""The file store on a real JuiceFS volume, formatted and FUSE-mounted by the suite."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from application.files import PosixFileStore
from domain.errors import Conflict


pytestmark = pytest.mark.integration

MB = 1024 * 1024
ALLOWED = ("application/pdf", "video/mp4", "image/jpeg")


@pytest.fixture
def store(juicefs_mount: Path, request: pytest.FixtureRequest) -> PosixFileStore:  # noqa: F811
    """A store of its own per test, in a directory on the JuiceFS mount."""
    root = juicefs_mount / "tests" / request.node.name.replace("/", "_")
    root.mkdir(parents=True)
    return PosixFileStore(root, max_bytes=100 * MB, allowed_types=ALLOWED)


def read_back(store: PosixFileStore, stored) -> bytes:
    with store.open(stored.file_id, stored.extension) as opened:
        return opened.read()


def chunked(data: bytes, size: int = 256 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_the_mount_is_a_juicefs_volume(juicefs_mount):  # noqa: F811
    assert os.path.ismount(juicefs_mount)
    assert (juicefs_mount / ".config").exists()  # JuiceFS's own control file
    store = PosixFileStore(juicefs_mount, MB, ALLOWED, require_mount=True)
    assert store.write([b"%PDF-1.7"], "application/pdf").size == 8


@pytest.mark.parametrize("size", [1 * MB, 20 * MB + 123])
def test_round_trip_keeps_bytes_and_sha256(store, size):
    data = os.urandom(size)

    stored = store.write(chunked(data), "video/mp4")

    expected = hashlib.sha256(data).hexdigest()
    assert (stored.size, stored.sha256) == (size, expected)
    back = read_back(store, stored)
    assert len(back) == size and hashlib.sha256(back).hexdigest() == expected
    assert [(f.file_id, f.size) for f in store.list_files()] == [(stored.file_id, size)]


def test_async_round_trip_of_20_mb(store):
    data = os.urandom(20 * MB)

    async def body():
        for chunk in chunked(data, 64 * 1024):
            yield chunk

    stored = asyncio.run(store.write_async(body(), "application/pdf"))

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert read_back(store, stored) == data


WRITER = """
import sys, time
from uuid import UUID
from application.files import PosixFileStore

root, file_id, mode = sys.argv[1], UUID(sys.argv[2]), sys.argv[3]
store = PosixFileStore(root, max_bytes=1 << 40, allowed_types=("video/mp4",))

def body():
    for _ in range(4):
        yield b"x" * (1 << 20)
    print("writing", flush=True)
    while True:
        if mode == "paused":
            time.sleep(0.5)
        yield b"y" * (1 << 20)

store.write(body(), "video/mp4", file_id=file_id)
print("finished?!", flush=True)
"""


@pytest.mark.parametrize("mode", ["paused", "streaming"])
def test_a_writer_killed_mid_write_leaves_no_visible_file(store, mode):
    file_id = uuid4()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store.root), str(file_id), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(0.3)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL

    assert not store.exists(file_id, "mp4")
    assert list(store.list_files()) == []
    partials = [name for name in os.listdir(store.directory) if name.endswith(".partial")]
    assert len(partials) == 1 and partials[0].startswith(f".{file_id}.mp4.")

    assert store.sweep_partials(timedelta(hours=1)) == []  # too fresh to be a crash
    assert [p.name for p in store.sweep_partials(timedelta(0))] == partials
    assert os.listdir(store.directory) == []


def test_concurrent_writers_each_get_their_own_complete_file(store):
    bodies = [os.urandom(2 * MB + n) for n in range(16)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        stored = list(pool.map(lambda data: store.write(chunked(data), "image/jpeg"), bodies))

    assert len({s.file_id for s in stored}) == 16
    for data, saved in zip(bodies, stored, strict=True):
        assert saved.sha256 == hashlib.sha256(data).hexdigest()
        assert read_back(store, saved) == data
    assert len(list(store.list_files())) == 16


def test_concurrent_writers_of_one_file_id_leave_exactly_one_winner(store):
    file_id = uuid4()
    bodies = [bytes([n]) * (3 * MB) for n in range(6)]

    def attempt(data: bytes):
        try:
            return store.write(chunked(data), "application/pdf", file_id=file_id)
        except Conflict:
            return None

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, bodies))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert hashlib.sha256(read_back(store, winners[0])).hexdigest() == winners[0].sha256
    assert [f.file_id for f in store.list_files()] == [file_id]
    assert not [n for n in os.listdir(store.directory) if n.endswith(".partial")]
