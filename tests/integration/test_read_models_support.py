"""Shared helpers of the read-model tests (no tests here): drive the workflow through the
real commands, wait for projections, compare live tables with rebuilt ones."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg import sql

from domain.errors import WorkflowError
from domain.identity import Actor
from interface.examples import load_example_catalog
from projections import position as positions
from projections.log import EventLog
from projections.projection import Projection
from projections.rebuild import drop, rebuild

ASSESSORS = [Actor.of("assessor-ada", "assessor"), Actor.of("assessor-bo", "assessor")]
ADMIN = Actor.of("admin-al", "admin")


def learner(number: int) -> Actor:
    return Actor.of(f"learner-{number}")


def setup_catalog(app: Any) -> tuple[str, str]:
    return load_example_catalog(app)


def open_task(app: Any, instance_id: UUID) -> Any | None:
    instance = app.get_instance(instance_id)
    return app.get_task(instance.open_tasks[0]) if instance.open_tasks else None


def submit(app: Any, instance_id: UUID) -> None:
    task = open_task(app, instance_id)
    if task is None or task.candidate_group is not None:
        return
    actor = Actor.of(task.learner_id)
    file_id = uuid4()
    app.attach_file(actor, instance_id, file_id=file_id, extension="txt", media_type="text/plain", size=4,
                    sha256="0" * 64, name="notes.txt")
    app.complete_task(actor, task.id, {"statement": "My weld, photographed after cleaning it.",
                                       "evidence_files": [str(file_id)]})


def claim(app: Any, instance_id: UUID, assessor: Actor) -> None:
    task = open_task(app, instance_id)
    if task is not None and task.candidate_group is not None:
        app.claim_task(assessor, task.id)


def unclaim(app: Any, instance_id: UUID, assessor: Actor) -> None:
    task = open_task(app, instance_id)
    if task is not None and task.candidate_group is not None:
        app.unclaim_task(assessor, task.id)


def work(app: Any, instance_id: UUID, assessor: Actor, score: int) -> None:
    """Claims (if needed) and completes the open group task: assessment or observation."""
    task = open_task(app, instance_id)
    if task is None or task.candidate_group is None:
        return
    if task.assignee is None:
        app.claim_task(assessor, task.id)
        task = app.get_task(task.id)
    data = {"score": score, "feedback": "Reviewed."} if task.form else {}
    app.complete_task(Actor.of(task.assignee, "assessor"), task.id, data)


def run_to_end(app: Any, instance_id: UUID, score: int = 80) -> None:
    submit(app, instance_id)
    work(app, instance_id, ASSESSORS[0], score)
    work(app, instance_id, ASSESSORS[0], score)


def attempt(action: Any, *args: Any) -> None:
    """Runs a command; a refusal by the domain is a legitimate outcome of a random sequence."""
    try:
        action(*args)
    except WorkflowError:
        pass


def wait_caught_up(app: Any, projections: list[Projection], timeout: float = 20.0) -> None:
    event_log = EventLog.of(app)
    head = app.recorder.max_notification_id() or 0
    deadline = time.monotonic() + timeout
    with event_log.connect("test-wait") as conn:
        for projection in projections:
            while True:
                with conn.cursor() as cur:
                    try:
                        at = positions.read(cur, positions.tracking_table(projection.name), event_log.schema,
                                            "", event_log.application_name) or 0
                    except psycopg.errors.UndefinedTable:
                        at = 0
                if at >= head:
                    break
                assert time.monotonic() < deadline, f"{projection.name} stuck at {at} < {head}"
                time.sleep(0.02)


def table_rows(conn: psycopg.Connection[Any], schema: str, table: str, key: tuple[str, ...]) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, key)))
    return list(conn.execute(query).fetchall())


def assert_live_equals_rebuilt(app: Any, projection: Projection) -> int:
    """Rebuilds ``projection`` from zero beside the live tables and compares them row for row.
    Returns how many rows were compared."""
    event_log = EventLog.of(app)
    suffix = "__check"
    rebuild(event_log, projection, suffix=suffix, switch=False, batch_size=1000)
    compared = 0
    try:
        with event_log.connect("test-compare") as conn:
            for table in projection.all_tables():
                live = table_rows(conn, event_log.schema, table.physical(), table.key)
                rebuilt = table_rows(conn, event_log.schema, table.physical(suffix), table.key)
                assert live == rebuilt, f"{table.name}: live and rebuilt differ"
                compared += len(live)
    finally:
        with event_log.connect("test-compare") as conn:
            drop(conn, event_log, projection, suffix)
    return compared
