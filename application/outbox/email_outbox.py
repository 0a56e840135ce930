"""The email outbox: one row per ``email`` message recorded in a stored event.

A row is identified by the stored event's id (``contract.event_id``) and the message's
index in that event's ``messages``. Its sent state mirrors ``Instance.EmailSent``, its
incident state ``Instance.IncidentRaised`` / ``IncidentRetried``, so the whole table
can be rebuilt from the log. Only the attempt counter, the next attempt time and the claim
of the worker sending it (``claimed_by``, ``claimed_until``) are the worker's own bookkeeping.

A row keeps only what the mail worker needs of the message's payload (``storable_payload``):
a payload may be computed from learner data PostgreSQL cannot store (a NUL character), and
one email that cannot be stored must become that email's incident, not stop the reader.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

import psycopg

from application.contract import event_id as stored_event_id
from application.mail import message_id_for
from application.mail.compose import UNUSABLE, storable_payload
from application.outbox.reader import TrackedReader
from application.outbox.tables import OUTBOX, q
from domain.event_types import stored_topic

EMAIL = "email"
PENDING, SENT, INCIDENT, DROPPED = "pending", "sent", "incident", "dropped"

log = logging.getLogger(__name__)


def email_incident_id(event_id: str, index: int) -> str:
    return f"email:{event_id}:{index}"


class EmailOutbox(TrackedReader):
    name = "email-outbox"
    topics = tuple(
        [stored_topic("Instance", fact) for fact in
         ("Started", "Advanced", "EmailSent", "IncidentRaised", "IncidentRetried")]
        + [stored_topic("Task", "Reminded")]
    )

    def handle(self, curs: Any, domain_event: Any, notification: Any) -> None:
        fact = type(domain_event).__name__
        if fact == "EmailSent":
            self._set_status(curs, "event_id = %s AND idx = %s", (UUID(domain_event.event_id), domain_event.index), SENT)
        elif fact == "IncidentRaised":
            self._set_status(curs, "incident_id = %s", (domain_event.incident_id,), INCIDENT)
        elif fact == "IncidentRetried":
            curs.execute(
                q(self.datastore, f"UPDATE {{schema}}.{OUTBOX} SET status = %s, attempts = 0, next_attempt_at = NULL, "
                                  "claimed_by = NULL, claimed_until = NULL WHERE incident_id = %s AND status = %s"),
                (PENDING, domain_event.incident_id, INCIDENT),
            )
        else:
            self._add(curs, domain_event)

    def _add(self, curs: Any, domain_event: Any) -> None:
        instance_id = getattr(domain_event, "instance_id", None) or domain_event.originator_id
        event_id = stored_event_id(domain_event.originator_id, domain_event.originator_version)
        for index, message in enumerate(domain_event.messages):
            if message.get("name") != EMAIL:
                continue
            row = (UUID(event_id), index, instance_id, domain_event.originator_id, domain_event.originator_version,
                   message_id_for(UUID(event_id), index), email_incident_id(event_id, index))
            try:
                # A savepoint: an email PostgreSQL still refuses must not roll back the batch,
                # or the reader would stop at it and no email for anyone would go out again.
                with curs.connection.transaction():
                    self._insert(curs, row, json.dumps(storable_payload(message.get("payload")), allow_nan=False))
            except (psycopg.DataError, ValueError) as error:
                log.error("email %d of event %s (instance %s) cannot be stored (%s); it becomes an incident",
                          index, event_id, instance_id, type(error).__name__)
                self._insert(curs, row, json.dumps({UNUSABLE: ["payload"]}))

    def _insert(self, curs: Any, row: tuple[Any, ...], payload: str) -> None:
        curs.execute(
            q(self.datastore, f"""INSERT INTO {{schema}}.{OUTBOX}
                (event_id, idx, instance_id, originator_id, originator_version, message_id, incident_id, payload)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""),
            (*row, payload),
        )

    def _set_status(self, curs: Any, where: str, params: tuple[Any, ...], status: str) -> None:
        curs.execute(q(self.datastore, f"UPDATE {{schema}}.{OUTBOX} SET status = %s WHERE {where}"), (status, *params))
