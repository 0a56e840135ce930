"""What the crash and replica tests check once the dust settles: commands acknowledged
are in the store, task states follow from the events, read models equal a rebuild from
zero, and the relay published every stored event."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from application.bootstrap import bootstrap
from application.contract import event_id
from application.database import Database
from application.settings import load_settings
from domain.instance import WorkflowInstance
from domain.task import OPEN, WorkflowTask
from projections.log import EventLog
from projections.rebuild import drop, rebuild
from projections.registry import selected
from projections.status import status
from tests.reliability.conftest import wait_until


@dataclass
class Tally:
    """Commands by outcome: ``acknowledged`` got a 2xx; ``unanswered`` reached the service
    and got no response (in flight when it died); ``not_connected`` found nobody listening."""

    sent: int = 0
    acknowledged: int = 0
    unanswered: int = 0
    not_connected: int = 0
    refused: Counter[int] = field(default_factory=Counter)

    def figures(self) -> dict[str, Any]:
        return {"sent": self.sent, "acknowledged": self.acknowledged, "unanswered": self.unanswered,
                "not_connected": self.not_connected, "refused": dict(self.refused)}


@contextmanager
def service_on(database: Database) -> Iterator[Any]:
    """A WorkflowService of our own on the same schema, to read the store."""
    settings = load_settings({}, database_host=database.host, database_port=database.port,
                             database_name=database.name, database_schema=database.schema,
                             database_pool_size=2, database_pool_max_overflow=2)
    app = bootstrap(settings, database=database)
    try:
        yield app
    finally:
        app.close()


def stored_events(app: Any) -> list[Any]:
    """Every notification of the log, in order."""
    found, start = [], 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=1000)
        found.extend(page)
        if len(page) < 1000:
            return found
        start = page[-1].id + 1


def aggregates(app: Any) -> tuple[dict[UUID, WorkflowInstance], dict[UUID, WorkflowTask]]:
    """Every instance and task, rebuilt from its events."""
    ids = {n.originator_id: n.topic for n in stored_events(app)}
    instances, tasks = {}, {}
    for originator_id in ids:
        aggregate = app.repository.get(originator_id)
        if isinstance(aggregate, WorkflowInstance):
            instances[originator_id] = aggregate
        elif isinstance(aggregate, WorkflowTask):
            tasks[originator_id] = aggregate
    return instances, tasks


def unexplained_tasks(instances: dict[UUID, WorkflowInstance], tasks: dict[UUID, WorkflowTask]) -> list[str]:
    """Instances whose open tasks are not exactly their tasks with status open."""
    open_by_instance: dict[UUID, set[UUID]] = {}
    for task in tasks.values():
        if task.status == OPEN:
            open_by_instance.setdefault(task.instance_id, set()).add(task.id)
    problems = []
    for instance in instances.values():
        if set(instance.open_tasks) != open_by_instance.pop(instance.id, set()):
            problems.append(f"instance {instance.id}: open {sorted(map(str, instance.open_tasks))}")
    problems.extend(f"open tasks of unknown instance {i}" for i in open_by_instance)
    return problems


def wait_for_projections(app: Any, timeout: float = 60.0) -> int:
    """Until every projection's position is the log head; returns the head."""
    event_log = EventLog.of(app)

    def caught_up() -> int | None:
        rows = status(event_log, selected(None))
        if all(row.position is not None and row.position >= row.head for row in rows):
            return rows[0].head or -1
        return None

    return wait_until(caught_up, timeout, 0.2, "read models caught up")


def read_models_differ_from_rebuild(app: Any) -> dict[str, int]:
    """Builds every read model from zero into side tables and compares them with the live
    ones row by row; returns {table: number of differing rows}. The side tables are dropped."""
    event_log = EventLog.of(app)
    differences: dict[str, int] = {}
    for projection in selected(None):
        rebuild(event_log, projection, switch=False, suffix="__check")
        with event_log.connect("reliability-check") as conn:
            for table in projection.all_tables():
                live = _rows(conn, event_log.schema, table.physical())
                fresh = _rows(conn, event_log.schema, table.physical("__check"))
                differences[table.physical()] = sum(((live - fresh) + (fresh - live)).values())
            drop(conn, event_log, projection, "__check")
    return differences


def _rows(conn: psycopg.Connection[Any], schema: str, table: str) -> Counter[str]:
    rows = conn.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    return Counter(json.dumps(row, sort_keys=True, default=str) for row in rows.fetchall())


def expected_cloudevent_ids(app: Any, after: int = 0) -> dict[str, int]:
    """CloudEvents id -> notification id of every stored event after ``after``."""
    return {event_id(n.originator_id, n.originator_version): n.id for n in stored_events(app) if n.id > after}


def published_ids(bootstrap_servers: str, topic: str, wanted: set[str], timeout: float = 60.0) -> Counter[str]:
    """CloudEvents ids on ``topic`` (with their counts), read until every wanted id is there."""
    from aiokafka import AIOKafkaConsumer

    async def read() -> Counter[str]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        seen: Counter[str] = Counter()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not wanted <= seen.keys() and loop.time() < deadline:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    for record in batch:
                        seen[json.loads(record.value)["id"]] += 1
        finally:
            await consumer.stop()
        return seen

    return asyncio.run(read())
