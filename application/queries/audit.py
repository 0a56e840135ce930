"""Audit: what happened to any aggregate, in order, with who, what and when; any aggregate
as it was at a version or a time; the global log from a position as CloudEvents."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg import sql

from application.contract import (
    CloudEvent,
    EntityStates,
    change_of,
    state_of,
    to_cloudevent,
)
from domain.errors import InvalidInput, NotFound, Problem
from domain.identity import SYSTEM_USER

MAX_LOG_PAGE = 1000


def who(domain_event: Any) -> str:
    """The actor of an event: who acted, the learner who started, or the service itself."""
    for name in ("by", "user_id", "added_by"):
        value = getattr(domain_event, name, None)
        if value:
            return str(value)
    uploaded_by = (getattr(domain_event, "file", None) or {}).get("uploaded_by")
    return str(uploaded_by) if uploaded_by else SYSTEM_USER


def history(app: Any, aggregate_id: UUID) -> list[dict[str, Any]]:
    """Every event of one aggregate, oldest first: position, version, type, who, when, what."""
    rows = _stored(app, aggregate_id)
    if not rows:
        raise NotFound(f"nothing was ever recorded for {aggregate_id}")
    entries = []
    for notification_id, stored in rows:
        event = app.mapper.to_domain_event(stored)
        entries.append({
            "position": notification_id,
            "version": event.originator_version,
            "type": type(event).EVENT_TYPE,
            "fact": type(event).__name__,
            "who": who(event),
            "when": event.timestamp,
            "change": change_of(event),
        })
    return entries


def as_of(app: Any, aggregate_id: UUID, *, version: int | None = None, at: datetime | None = None) -> dict[str, Any]:
    """The aggregate's public state at ``version``, or as it was at time ``at``."""
    if version is not None and at is not None:
        raise InvalidInput("give a version or a time, not both", [Problem("version", "and 'at' both given")])
    if at is not None:
        if at.tzinfo is None:
            raise InvalidInput("the time needs a time zone", [Problem("at", "naive datetime")])
        versions = [entry["version"] for entry in history(app, aggregate_id) if entry["when"] <= at]
        if not versions:
            raise NotFound(f"{aggregate_id} did not exist yet at {at.isoformat()}")
        version = versions[-1]
    try:
        aggregate = app.repository.get(aggregate_id, version=version)
    except Exception as error:
        if type(error).__name__ == "AggregateNotFoundError":
            raise NotFound(f"{aggregate_id} not found") from None
        raise
    if version is not None and aggregate.version != version:
        raise NotFound(f"{aggregate_id} has no version {version} (latest is {aggregate.version})")
    return state_of(aggregate)


def global_log(app: Any, after: int = 0, limit: int = 100) -> list[CloudEvent]:
    """The stored events after position ``after``, in order, as the published CloudEvents."""
    limit = max(1, min(limit, MAX_LOG_PAGE))
    states = EntityStates(app.repository)
    events = []
    for notification in app.recorder.select_notifications(start=after + 1, limit=limit):
        domain_event = app.mapper.to_domain_event(notification)
        events.append(to_cloudevent(domain_event, states.after(domain_event), notification.id))
    return events


def _stored(app: Any, aggregate_id: UUID) -> list[tuple[int, Any]]:
    recorder = app.recorder
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
        "WHERE originator_id = %s ORDER BY originator_version").format(
        sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
        cur.execute(query, (aggregate_id,))
        return [
            (row["notification_id"], StoredEvent(originator_id=row["originator_id"],
                                                 originator_version=row["originator_version"],
                                                 topic=row["topic"], state=bytes(row["state"])))
            for row in cur.fetchall()
        ]
