"""Shared fixtures: a real PostgreSQL for every integration test, a fresh schema each.

PostgreSQL is the machine's server at 127.0.0.1:5432 where it answers, otherwise the
embedded server the service itself uses. Brokers, mounts and mail servers live in
``tests/fixtures/`` and are loaded here.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from application.bootstrap import bootstrap
from application.database import Database, ensure_database, open_database
from application.service import WorkflowService
from application.settings import Settings, load_settings

pytest_plugins = ["tests.fixtures.smtp", "tests.fixtures.juicefs", "tests.fixtures.kafka"]

ROOT = Path(__file__).resolve().parents[1]


def _local_postgres_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def database_server(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """The PostgreSQL server of this test session (no schema chosen yet)."""
    host = os.environ.get("SKILLBASE_TEST_DATABASE_HOST", "127.0.0.1")
    if _local_postgres_answers(host):
        settings = load_settings({}, database_host=host, database_name="test")
    else:
        settings = load_settings({}, data_dir=str(tmp_path_factory.mktemp("embedded")), database_name="test")
    return open_database(settings)


@pytest.fixture
def schema_database(database_server: Database) -> Iterator[Database]:
    """A fresh, empty schema for one test; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(**{**database_server.__dict__, "schema": schema})
    ensure_database(database)
    yield database
    with psycopg.connect(database.conninfo(), autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def settings(schema_database: Database, tmp_path: Path) -> Settings:
    return load_settings(
        {},
        data_dir=str(tmp_path),
        database_host=schema_database.host,
        database_port=schema_database.port,
        database_name=schema_database.name,
        database_schema=schema_database.schema,
    )


@pytest.fixture
def app(settings: Settings, schema_database: Database) -> Iterator[WorkflowService]:
    """The workflow application on a real PostgreSQL schema of its own."""
    service = bootstrap(settings, database=schema_database)
    yield service
    service.close()
