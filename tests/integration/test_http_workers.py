"""``serve --workers 2``: two API processes on one port, built from the environment, serve
the process together; the same Idempotency-Key sent to both at once still starts one
instance."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from application.bootstrap import bootstrap
from application.database import Database, ensure_database
from application.settings import load_settings
from interface.http.testing import ASSESSOR, auth
from tests.integration.test_http_server import CREDENTIAL, free_port, stop

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    """The worker processes uvicorn spawned (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in path.read_text().split() if path.exists() else []:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command and b"resource_tracker" not in command:
            found.append(int(child))
    return found


@pytest.fixture
def database(database_server: Database) -> Iterator[Database]:
    """A schema of its own, dropped whatever the test does."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(**{**database_server.__dict__, "schema": schema})
    ensure_database(database)
    try:
        yield database
    finally:
        with psycopg.connect(database.conninfo(), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_two_worker_processes_serve_one_port(database: Database, tmp_path: Path) -> None:
    schema = database.schema
    port = free_port()
    env = {**os.environ, "SKILLBASE_WORKFLOW_DATABASE_HOST": database.host,
           "SKILLBASE_WORKFLOW_DATABASE_PORT": str(database.port), "SKILLBASE_WORKFLOW_DATABASE_NAME": database.name,
           "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": schema, "SKILLBASE_WORKFLOW_DATA_DIR": str(tmp_path),
           "SKILLBASE_WORKFLOW_HTTP_PORT": str(port), "SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS": ""}
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "interface.cli", "serve", "--workers", "2"], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(_children(process.pid)) < 2 or not _ready(url):
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "two workers did not come up"
            time.sleep(0.2)
        settings = load_settings({k: v for k, v in env.items() if k.startswith("SKILLBASE_WORKFLOW_")})
        learner = auth(settings, "learner-two", [])

        def start(_: int) -> Any:
            with httpx.Client(base_url=url, timeout=20) as http:  # a new connection each
                return http.post("/instances", json={"credential_id": CREDENTIAL},
                                 headers={**learner, "Idempotency-Key": "both-at-once"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(start, range(8)))
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7

        instance = answers[0].json()["id"]
        assessor = auth(settings, *ASSESSOR)
        with httpx.Client(base_url=url, timeout=20) as http:
            detail = http.get(f"/instances/{instance}", headers=learner)
            assert detail.status_code == 200 and detail.json()["open_task_ids"]
            assert http.get("/tasks", params={"inbox": "groups"}, headers=assessor).status_code == 200
        assert len(_children(process.pid)) == 2
    finally:
        stop(process)
        log.close()
    service = bootstrap(load_settings({k: v for k, v in env.items() if k.startswith("SKILLBASE_WORKFLOW_")}))
    try:
        started = [n for n in service.recorder.select_notifications(start=1, limit=10_000)
                   if n.topic.endswith("Instance.Started")]
        assert len(started) == 1
    finally:
        service.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
