"""Uploads to a real ``skillbase-workflow serve`` process over loopback, its store on the
JuiceFS volume: the server killed (SIGKILL) in the middle of an upload leaves no visible file
and no reference, and a large upload streams through in bounded memory."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest

from application.bootstrap import open_file_store
from tests.fixtures.kafka import free_port
from interface.http.testing import LEARNER, auth

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"


class Server:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ,
               "SKILLBASE_WORKFLOW_DATA_DIR": settings.data_dir,
               "SKILLBASE_WORKFLOW_DATABASE_HOST": settings.database_host,
               "SKILLBASE_WORKFLOW_DATABASE_PORT": str(settings.database_port),
               "SKILLBASE_WORKFLOW_DATABASE_NAME": settings.database_name,
               "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": settings.database_schema,
               "SKILLBASE_WORKFLOW_FILES_ROOT": settings.files_root,
               "SKILLBASE_WORKFLOW_JWT_HS256_SECRET": settings.jwt_hs256_secret}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interface.cli", "serve", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start (exit {self.process.returncode})")
            time.sleep(0.1)

    def high_water_mark(self) -> int:
        """The server's peak resident memory so far, in bytes (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def served(settings: Any, juicefs_mount: Path) -> Iterator[Server]:
    on_mount = msgspec.structs.replace(settings, files_root=str(juicefs_mount), jwt_hs256_secret="s" * 32)
    server = Server(on_mount)
    try:
        yield server
    finally:
        server.stop()


def start_instance(server: Server) -> str:
    started = httpx.post(f"{server.url}/instances", json={"credential_id": CREDENTIAL},
                         headers=auth(server.settings, *LEARNER), timeout=30)
    assert started.status_code == 201, started.text
    return started.json()["id"]


def test_a_server_killed_mid_upload_leaves_no_visible_file_and_no_reference(served, app):
    store = open_file_store(served.settings)
    instance_id = start_instance(served)
    files_before = set(store.list_files())
    partials_before = set(store.partials(timedelta(0)))
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        for n in range(1000):
            yield os.urandom(256 * 1024)
            if n == 16:  # 4 MB in: the server is writing
                sent.set()
                time.sleep(0.5)

    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(httpx.post(f"{served.url}/instances/{instance_id}/files", content=body(), timeout=60,
                                      headers={**auth(served.settings, *LEARNER), "Content-Type": "video/mp4",
                                               "X-File-Name": "long.mp4"}))
        except httpx.TransportError as error:
            outcome.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    assert sent.wait(30)
    deadline = time.monotonic() + 30
    while not (set(store.partials(timedelta(0))) - partials_before):
        assert time.monotonic() < deadline, "the server never started writing"
        time.sleep(0.02)
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=30)
    sender.join(timeout=60)

    assert isinstance(outcome[0], httpx.TransportError)  # the client never got an answer
    assert set(store.list_files()) == files_before  # no visible file
    (partial,) = set(store.partials(timedelta(0))) - partials_before  # only a hidden partial
    assert partial.name.startswith(".") and ".mp4." in partial.name and partial.name.endswith(".partial")
    assert not any(type(e).__name__ == "FileAttached" for e in app.events.get(UUID(instance_id)))
    assert store.sweep_partials(timedelta(hours=1)) == []  # too fresh to be swept
    assert partial in store.sweep_partials(timedelta(0))


def test_a_large_upload_streams_in_bounded_memory_and_round_trips(served):
    instance_id = start_instance(served)
    headers = {**auth(served.settings, *LEARNER), "Content-Type": "video/mp4", "X-File-Name": "big.mp4"}
    warm = httpx.post(f"{served.url}/instances/{instance_id}/files", content=os.urandom(MB), headers=headers,
                      timeout=60)
    assert warm.status_code == 201, warm.text
    before = served.high_water_mark()
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(80):
            chunk = os.urandom(MB)
            digest.update(chunk)
            yield chunk

    created = httpx.post(f"{served.url}/instances/{instance_id}/files", content=body(), headers=headers, timeout=120)

    assert created.status_code == 201, created.text
    assert created.json()["size"] == 80 * MB and created.json()["sha256"] == digest.hexdigest()
    growth = served.high_water_mark() - before
    assert growth < 24 * MB, f"the server's peak memory grew by {growth / MB:.1f} MB for an 80 MB upload"
    back = hashlib.sha256()
    with httpx.stream("GET", f"{served.url}{created.headers['location']}", headers=headers, timeout=120) as got:
        assert got.status_code == 200
        for chunk in got.iter_bytes():
            back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()
    assert served.high_water_mark() - before < 24 * MB
    headed = httpx.head(f"{served.url}{created.headers['location']}", headers=headers, timeout=30)
    assert (headed.status_code, headed.headers["content-length"], headed.content) == (200, str(80 * MB), b"")


def test_a_client_that_hangs_up_mid_upload_leaves_nothing_behind(served, app):
    import socket

    store = open_file_store(served.settings)
    instance_id = start_instance(served)
    files_before, partials_before = set(store.list_files()), set(store.partials(timedelta(0)))
    token = auth(served.settings, *LEARNER)["Authorization"]
    with socket.create_connection(("127.0.0.1", served.port)) as connection:
        connection.sendall((f"POST /instances/{instance_id}/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Authorization: {token}\r\nContent-Type: video/mp4\r\n"
                            f"Content-Length: {20 * MB}\r\n\r\n").encode())
        for _ in range(4):
            connection.sendall(os.urandom(MB))
        deadline = time.monotonic() + 30
        while not (set(store.partials(timedelta(0))) - partials_before):
            assert time.monotonic() < deadline, "the server never started writing"
            time.sleep(0.02)
    deadline = time.monotonic() + 30
    while set(store.partials(timedelta(0))) - partials_before:  # the server notices and cleans up
        assert time.monotonic() < deadline, "the partial was left behind"
        time.sleep(0.05)
    assert set(store.list_files()) == files_before
    assert not any(type(e).__name__ == "FileAttached" for e in app.events.get(UUID(instance_id)))
    assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200  # and it still serves
