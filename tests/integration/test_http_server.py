"""The real server process: ``skillbase-workflow serve`` on a free loopback port, on a
schema of its own, driven over HTTP; and schemathesis against the OpenAPI document it serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from application.bootstrap import bootstrap
from application.database import Database, ensure_database
from application.settings import Settings, load_settings
from interface.http.testing import ADMIN, ASSESSOR, LEARNER, auth, wait_until_ready
from tests.integration.test_http_process import attach_evidence

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"


@dataclass(frozen=True)
class Server:
    url: str
    settings: Settings
    banner: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(database_server: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(**{**database_server.__dict__, "schema": schema})
    ensure_database(database)
    data_dir = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "SKILLBASE_WORKFLOW_DATABASE_HOST": database.host,
           "SKILLBASE_WORKFLOW_DATABASE_PORT": str(database.port), "SKILLBASE_WORKFLOW_DATABASE_NAME": database.name,
           "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": schema, "SKILLBASE_WORKFLOW_DATA_DIR": str(data_dir),
           "SKILLBASE_WORKFLOW_HTTP_HOST": "127.0.0.1", "SKILLBASE_WORKFLOW_HTTP_PORT": str(port),
           "SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS": ""}
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "interface.cli", "serve"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    banner = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            banner.append(line)
            if "example credential" in line:
                break
        wait_until_ready(url, process, 60, data_dir / "server.log")
        settings = load_settings({k: v for k, v in env.items() if k.startswith("SKILLBASE_WORKFLOW_")})
        yield Server(url=url, settings=settings, banner="".join(banner))
    finally:
        stop(process)
        log.close()
        with psycopg.connect(database.conninfo(), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def stop(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_the_served_process_runs_over_http(server: Server) -> None:
    assert "learner" in server.banner and "/schema" in server.banner and "DEVELOPMENT KEY" in server.banner
    learner_token = next(line.split()[-1] for line in server.banner.splitlines() if "learner-lin" in line)
    learner = {"Authorization": f"Bearer {learner_token}"}
    assessor = auth(server.settings, *ASSESSOR)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/instances").status_code == 401
        started = http.post("/instances", json={"credential_id": CREDENTIAL},
                            headers={**learner, "Idempotency-Key": "served-1"})
        assert started.status_code == 201, started.text
        instance = started.json()["id"]
        service = bootstrap(server.settings)
        try:
            file_id = attach_evidence(service, server.settings, instance)
        finally:
            service.close()
        (submit,) = http.get(f"/instances/{instance}", headers=learner).json()["open_task_ids"]
        done = http.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
            "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.", "evidence_files": [file_id]}})
        assert done.status_code == 200, done.text
        inbox = http.get("/tasks", params={"inbox": "groups", "wait_for": done.headers["workflow-log-position"]},
                         headers=assessor).json()
        (assess,) = [task["id"] for task in inbox["items"]]
        assert http.post(f"/tasks/{assess}/claim", headers=assessor).status_code == 200
        assert http.post(f"/tasks/{assess}/complete", headers=assessor,
                         json={"data": {"score": 91, "feedback": "Clean work."}}).status_code == 200
        (observe,) = http.get(f"/instances/{instance}", headers=learner).json()["open_task_ids"]
        assert http.post(f"/tasks/{observe}/claim", headers=assessor).status_code == 200
        assert http.post(f"/tasks/{observe}/complete", headers=assessor, json={"data": {}}).status_code == 200
        final = http.get(f"/instances/{instance}", headers=learner).json()
        assert (final["status"], final["result"]) == ("completed", "pass")
        metrics = http.get("/metrics", headers=auth(server.settings, *ADMIN)).text
        assert 'skillbase_workflow_commands_total{command="complete_task",result="ok"}' in metrics
        assert "skillbase_workflow_reader_lag" in metrics


def test_the_api_keeps_its_openapi_promises(server: Server) -> None:
    """Valid tokens, generated requests: never a 5xx, and every answer matches the document
    the server serves (a few examples per operation, to stay quick)."""
    api = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures = []
    seen: dict[int, int] = {}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        admin_only = operation.path.startswith(("/definitions", "/deployments", "/audit", "/metrics", "/dashboard"))
        headers = auth(server.settings, *(ADMIN if admin_only else LEARNER))

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck),
                             database=None, phases=[Phase.explicit, Phase.generate])
        def check(case: Any) -> None:
            if case.query:
                case.query.pop("wait_for", None)  # a log position not reached yet is a deliberate 422
            response = case.call_and_validate(base_url=server.url, headers=headers, checks=checks)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1

        try:
            check()
        except Exception as error:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{operation.method.upper()} {operation.path}: {error}"[:2000])
    assert not failures, "\n\n".join(failures)
    assert sum(seen.values()) >= 3 * len(operations) and any(200 <= s < 300 for s in seen), seen
    print(len(operations), "operations", seen)


def test_serve_on_the_embedded_defaults_stops_its_database_on_sigterm(tmp_path: Path) -> None:
    """``scripts/serve``'s setup (no database configured: the embedded PostgreSQL). A graceful
    stop (SIGTERM, as from a supervisor) must also stop the database it started: uvicorn
    re-raises the signal after shutting down, which used to kill the process before the
    handler that stops the database ran, leaving a postmaster behind."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SKILLBASE_WORKFLOW_")}
    env.update({"SKILLBASE_WORKFLOW_DATA_DIR": str(tmp_path), "SKILLBASE_WORKFLOW_HTTP_PORT": str(port),
                "SKILLBASE_WORKFLOW_HTTP_HOST": "127.0.0.1"})
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "interface.cli", "serve", "--api-only"], cwd=ROOT,
                               env=env, stdout=log, stderr=log)
    postmaster = tmp_path / "pgdata" / "postmaster.pid"
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, 90, tmp_path / "server.log")
        assert postmaster.exists(), "the embedded PostgreSQL is running while serve runs"
        server_pid = int(postmaster.read_text().split()[0])
    finally:
        stop(process, timeout=60)
        log.close()
    assert process.returncode == 0, (tmp_path / "server.log").read_text()[-2000:]
    assert not postmaster.exists()
    assert _gone_or_zombie(server_pid), f"the embedded PostgreSQL (pid {server_pid}) still runs"


def _gone_or_zombie(pid: int) -> bool:
    """A process that exited; its parent may not have reaped it yet (a zombie holds nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status
