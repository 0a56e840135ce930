"""What falls due when: a read model of timers, reminders, overdue dates and message waits.

Rows come from the log only (``TrackedReader``):
- ``timer``: each waiting timer of an instance event's ``timers`` (replaced per step);
- ``reminder`` / ``overdue``: a task created with a ``due_at``, until it closes;
- message waits: which messages each running instance waits for after each step, with
  its correlations and business keys (asked of the engine, from the event's state).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import isodate
import psycopg

from application.engine.clock import as_utc
from application.outbox.reader import TrackedReader
from application.outbox.tables import DUE, WAITS, q
from domain.event_types import stored_topic

log = logging.getLogger(__name__)

TIMER, REMINDER, OVERDUE = "timer", "reminder", "overdue"
REMINDER_LEAD_MAX = timedelta(days=1)
REMINDER_LEAD_SHARE = 0.2


def reminder_at(due: datetime, due_in: str | None) -> datetime:
    """A day before the due date, or at 80 % of the time given (``dueIn``) when that is
    shorter. The time given comes from the definition, not from the event's timestamp:
    due dates follow the application's clock, event timestamps the wall clock."""
    try:
        created = due - isodate.parse_duration(due_in or "")  # months resolve at the due date
    except (isodate.ISO8601Error, ValueError, TypeError, OverflowError):
        return due - REMINDER_LEAD_MAX
    return due - min(REMINDER_LEAD_MAX, (due - created) * REMINDER_LEAD_SHARE)


_INSTANCE_FACTS = ("Started", "Advanced", "Completed", "Cancelled", "Failed", "Deleted")
_TASK_FACTS = ("Created", "Completed", "Cancelled", "Deleted", "Reminded", "BecameOverdue")


class DueTimes(TrackedReader):
    name = "due-times"
    topics = tuple([stored_topic("Instance", f) for f in _INSTANCE_FACTS]
                   + [stored_topic("Task", f) for f in _TASK_FACTS])

    def __init__(self, app: Any, batch_size: int = 500) -> None:
        super().__init__(app, batch_size)
        self._instances: dict[UUID, dict[str, Any]] = {}

    def handle(self, curs: Any, domain_event: Any, notification: Any) -> None:
        fact = type(domain_event).__name__
        if notification.topic.startswith(stored_topic("Task", "")):
            self._task(curs, fact, domain_event)
        elif fact in ("Started", "Advanced"):
            self._step(curs, domain_event)
        else:
            self._forget(curs, domain_event.originator_id)

    # -- instances -------------------------------------------------------------------------

    def _step(self, curs: Any, event: Any) -> None:
        instance_id = event.originator_id
        self._delete(curs, DUE, "kind = %s AND instance_id = %s", (TIMER, instance_id))
        for timer in event.timers:
            if timer.get("due_at"):
                self._due(curs, TIMER, instance_id, timer["engine_task_id"], timer.get("element_id"),
                          as_utc(timer["due_at"]))
        self._delete(curs, WAITS, "instance_id = %s", (instance_id,))
        keys = self._keys(event)
        for wait in self._waiting_messages(event, keys):
            flat = {prop: value for props in wait["correlations"].values() if isinstance(props, dict)
                    for prop, value in props.items()}
            try:
                # A savepoint: a correlation value PostgreSQL refuses (a NUL from a form or a
                # script, a NaN) must not roll back the batch, or this reader would stop there
                # and no timer, deadline or kept message of any instance would fire again. No
                # message can carry such a value, so the wait is left out of correlation
                # matching; a message by instance id still reaches it.
                with curs.connection.transaction():
                    curs.execute(
                        q(self.datastore,
                          f"INSERT INTO {{schema}}.{WAITS} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"),
                        (instance_id, wait["engine_task_id"], wait["name"],
                         json.dumps({**flat, **keys["business"]}, allow_nan=False)),
                    )
            except (psycopg.DataError, ValueError) as error:
                log.error("instance %s waits for message %r with a correlation value that cannot be stored (%s): "
                          "it can be reached by instance id only", instance_id, str(wait["name"])[:200],
                          type(error).__name__)

    def _keys(self, event: Any) -> dict[str, Any]:
        instance_id = event.originator_id
        if type(event).__name__ == "Started":
            keys = {"definition": (event.definition_id, event.definition_version),
                    "business": {"instance_id": str(instance_id), "user_id": event.user_id,
                                 "credential_id": event.credential_id, "skill_id": event.skill_id}}
            self._instances[instance_id] = keys
            return keys
        return self._instance_keys(instance_id)

    def _instance_keys(self, instance_id: UUID) -> dict[str, Any]:
        keys = self._instances.get(instance_id)
        if keys is None:
            instance = self.app.repository.get(instance_id, version=1)
            keys = {"definition": (instance.definition_id, instance.definition_version),
                    "business": {"instance_id": str(instance_id), "user_id": instance.user_id,
                                 "credential_id": instance.credential_id, "skill_id": instance.skill_id}}
            self._instances[instance_id] = keys
        return keys

    def _waiting_messages(self, event: Any, keys: dict[str, Any]) -> list[dict[str, Any]]:
        definition_id, number = keys["definition"]
        version = self.app.definition_version(definition_id, number)
        return self.app.engine.waiting_messages(
            self.app._spec_ref(definition_id, version), event.engine_state, version.engine_format
        )

    def _element_properties(self, instance_id: UUID, element_id: str) -> dict[str, str]:
        definition_id, number = self._instance_keys(instance_id)["definition"]
        version = self.app.definition_version(definition_id, number)
        return self.app.engine.element_properties(self.app._spec_ref(definition_id, version), element_id)

    def _forget(self, curs: Any, instance_id: UUID) -> None:
        self._delete(curs, DUE, "kind = %s AND instance_id = %s", (TIMER, instance_id))
        self._delete(curs, WAITS, "instance_id = %s", (instance_id,))
        self._instances.pop(instance_id, None)

    # -- tasks -----------------------------------------------------------------------------

    def _task(self, curs: Any, fact: str, event: Any) -> None:
        key = str(event.originator_id)
        if fact == "Created":
            if event.due_at is not None:
                due_in = self._element_properties(event.instance_id, event.element_id).get("dueIn")
                self._due(curs, REMINDER, event.instance_id, key, event.element_id,
                          reminder_at(event.due_at, due_in))
                self._due(curs, OVERDUE, event.instance_id, key, event.element_id, event.due_at)
            return
        # Once overdue, a "due soon" reminder is moot: its row goes too.
        kinds = {"Reminded": (REMINDER,)}.get(fact, (REMINDER, OVERDUE))
        for kind in kinds:
            self._delete(curs, DUE, "kind = %s AND key = %s", (kind, key))

    # -- rows ------------------------------------------------------------------------------

    def _due(self, curs: Any, kind: str, instance_id: UUID, key: str, element_id: str | None, due: datetime) -> None:
        curs.execute(
            q(self.datastore, f"""INSERT INTO {{schema}}.{DUE} (kind, instance_id, key, element_id, due_at)
                VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind, instance_id, key)
                DO UPDATE SET due_at = EXCLUDED.due_at, failures = 0, not_before = NULL"""),
            (kind, instance_id, key, element_id, due),
        )

    def _delete(self, curs: Any, table: str, where: str, params: tuple[Any, ...]) -> None:
        curs.execute(q(self.datastore, f"DELETE FROM {{schema}}.{table} WHERE {where}"), params)

    # -- queries ---------------------------------------------------------------------------

    def due(self, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Rows due by ``now``, except those backed off after a failure (``back_off``)."""
        with self.datastore.transaction() as curs:
            curs.execute(q(self.datastore, f"SELECT * FROM {{schema}}.{DUE} WHERE due_at <= %s "
                                           "AND (not_before IS NULL OR not_before <= %s) "
                                           "ORDER BY due_at LIMIT %s"), (now, now, limit))
            return curs.fetchall()

    def back_off(self, row: dict[str, Any], until_after: Callable[[int], datetime]) -> datetime:
        """Sets a failing row aside until ``until_after(failures)``; a new due time for it
        (the next step's event) clears that."""
        failures = row.get("failures", 0) + 1
        not_before = until_after(failures)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(q(self.datastore, f"UPDATE {{schema}}.{DUE} SET failures = %s, not_before = %s "
                                           "WHERE kind = %s AND instance_id = %s AND key = %s"),
                         (failures, not_before, row["kind"], row["instance_id"], row["key"]))
        return not_before

    def next_due(self) -> datetime | None:
        with self.datastore.transaction() as curs:
            curs.execute(q(self.datastore, f"SELECT min(due_at) AS due FROM {{schema}}.{DUE}"))
            return curs.fetchone()["due"]
