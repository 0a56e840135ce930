"""The tables behind emails, due times and inbound messages, in the event store's schema.

Every table except ``workflow_inbound_messages`` is a read model of the event log, kept by
a tracked reader (``TrackedReader``): it can be dropped and rebuilt from the events. The
inbound messages table is the one record of messages that arrived before anyone waited.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

POSITIONS = "workflow_reader_positions"
OUTBOX = "workflow_email_outbox"
DUE = "workflow_due"
WAITS = "workflow_message_waits"
INBOUND = "workflow_inbound_messages"

_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {{schema}}.{POSITIONS} (
        reader text PRIMARY KEY,
        notification_id bigint NOT NULL DEFAULT 0)""",
    # An email is sent by the worker that claimed it (``claimed_by`` until ``claimed_until``,
    # MailWorker._claim), so two workers never send it side by side.
    f"""CREATE TABLE IF NOT EXISTS {{schema}}.{OUTBOX} (
        event_id uuid NOT NULL,
        idx int NOT NULL,
        instance_id uuid NOT NULL,
        originator_id uuid NOT NULL,
        originator_version int NOT NULL,
        message_id text NOT NULL,
        incident_id text NOT NULL,
        payload jsonb NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        attempts int NOT NULL DEFAULT 0,
        next_attempt_at timestamptz,
        last_error text,
        claimed_by uuid,
        claimed_until timestamptz,
        PRIMARY KEY (event_id, idx))""",
    f"""CREATE INDEX IF NOT EXISTS {OUTBOX}_pending ON {{schema}}.{OUTBOX} (next_attempt_at)
        WHERE status = 'pending'""",
    f"""CREATE TABLE IF NOT EXISTS {{schema}}.{DUE} (
        kind text NOT NULL,
        instance_id uuid NOT NULL,
        key text NOT NULL,
        element_id text,
        due_at timestamptz NOT NULL,
        failures int NOT NULL DEFAULT 0,
        not_before timestamptz,
        PRIMARY KEY (kind, instance_id, key))""",
    f"CREATE INDEX IF NOT EXISTS {DUE}_due_at ON {{schema}}.{DUE} (due_at)",
    f"""CREATE TABLE IF NOT EXISTS {{schema}}.{WAITS} (
        instance_id uuid NOT NULL,
        engine_task_id text NOT NULL,
        name text NOT NULL,
        correlations jsonb NOT NULL,
        PRIMARY KEY (instance_id, engine_task_id))""",
    # Message ids are unique per scope (the target instance, or the correlation keys),
    # not globally: see MessageCommands.deliver_message and ADR 0007. A pending message is
    # delivered by whoever holds its claim (``claim`` until ``claimed_until``), to the
    # instance in ``delivering_to``; one that failed waits until ``not_before``.
    f"""CREATE TABLE IF NOT EXISTS {{schema}}.{INBOUND} (
        scope text NOT NULL,
        message_id text NOT NULL,
        name text NOT NULL,
        payload jsonb,
        instance_id uuid,
        correlation_keys jsonb NOT NULL,
        received_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        delivered_to uuid,
        failures int NOT NULL DEFAULT 0,
        not_before timestamptz,
        claim uuid,
        claimed_until timestamptz,
        delivering_to uuid,
        PRIMARY KEY (scope, message_id))""",
    # Columns added since the first release, for tables an older release created (one
    # statement, so one brief lock, per table).
    f"""ALTER TABLE {{schema}}.{OUTBOX}
        ADD COLUMN IF NOT EXISTS claimed_by uuid,
        ADD COLUMN IF NOT EXISTS claimed_until timestamptz""",
    f"""ALTER TABLE {{schema}}.{DUE}
        ADD COLUMN IF NOT EXISTS failures int NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS not_before timestamptz""",
    f"""ALTER TABLE {{schema}}.{INBOUND}
        ADD COLUMN IF NOT EXISTS failures int NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS not_before timestamptz,
        ADD COLUMN IF NOT EXISTS claim uuid,
        ADD COLUMN IF NOT EXISTS claimed_until timestamptz,
        ADD COLUMN IF NOT EXISTS delivering_to uuid""",
    # Every scheduler round reads the pending messages: delivered and expired ones, which
    # only grow, stay out of its way.
    f"""CREATE INDEX IF NOT EXISTS {INBOUND}_pending ON {{schema}}.{INBOUND} (received_at)
        WHERE status = 'pending'""",
)

_ensured: set[tuple[int, str]] = set()


def q(datastore: Any, statement: str) -> sql.Composed:
    """``statement`` with ``{schema}`` replaced by the event store's schema."""
    return sql.SQL(statement).format(schema=sql.Identifier(datastore.schema))


def ensure_tables(datastore: Any) -> None:
    """Creates the tables once per process and schema (safe with many replicas at once).

    When every table, column and index is there already (every start but the first after
    an upgrade) nothing is run: ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` takes the table's
    ACCESS EXCLUSIVE lock even when the columns exist, so each process start queued behind
    any long reader of the outbox, and every worker's reads queued behind it."""
    key = (id(datastore), datastore.schema)
    if key in _ensured:
        return
    with datastore.transaction(commit=True) as curs:
        if not _complete(curs, datastore.schema):
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog: serialise.
            curs.execute("SELECT pg_advisory_xact_lock(hashtext('skillbase-workflow-tables'))")
            for statement in _DDL:
                curs.execute(q(datastore, statement))
    _ensured.add(key)


def _expected() -> tuple[set[tuple[str, str]], set[str]]:
    """The (table, column) pairs the statements add to older tables, every table (by one of
    its columns) and every index that ``_DDL`` makes."""
    columns: set[tuple[str, str]] = set()
    indexes: set[str] = set()
    for statement in _DDL:
        if created := re.match(r"CREATE TABLE IF NOT EXISTS \{schema\}\.(\w+) \(\s*(\w+)", statement):
            columns.add((created[1], created[2]))
        elif altered := re.match(r"ALTER TABLE \{schema\}\.(\w+)", statement):
            columns.update((altered[1], column) for column in re.findall(r"ADD COLUMN IF NOT EXISTS (\w+)", statement))
        elif index := re.match(r"CREATE INDEX IF NOT EXISTS (\w+)", statement):
            indexes.add(index[1])
    return columns, indexes


def _complete(curs: Any, schema: str) -> bool:
    columns, indexes = _expected()
    curs.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                 (schema,))
    found_columns = {(row["table_name"], row["column_name"]) for row in curs.fetchall()}
    curs.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))
    found_indexes = {row["indexname"] for row in curs.fetchall()}
    return columns <= found_columns and indexes <= found_indexes
