"""WorkflowInstance: one user working towards one credential.

Each event carries the facts of one engine step and the engine's serialized state after
it (ADR 0002), so loading an instance only assigns what was decided: replay never calls
the engine, reads the clock or draws an id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NotAllowed, NotFound
from domain.event_types import Change, Entity, aggregate_topic, event_type, stored_topic
from domain.identity import Actor

RUNNING, COMPLETED, CANCELLED, FAILED, DELETED = (
    "running",
    "completed",
    "cancelled",
    "failed",
    "deleted",
)
PASS, FAIL = "pass", "fail"
FINISHED = frozenset({COMPLETED, CANCELLED, FAILED})
# ``Advanced.cause`` values.
TASK_COMPLETED, TIMER_FIRED, MESSAGE_RECEIVED = "task_completed", "timer_fired", "message_received"
INCIDENT_OPEN, INCIDENT_RETRIED = "open", "retried"


def _topic(fact: str) -> str:
    return stored_topic("Instance", fact)


class WorkflowInstance(Aggregate):
    TOPIC = aggregate_topic("Instance")

    class Event(Aggregate.Event):
        TOPIC = _topic("Event")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)

    class Created(Event, Aggregate.Created):
        """Never recorded: an instance begins with ``Started``. Declared so that the class
        eventsourcing would otherwise derive from ``Aggregate.Created`` does not inherit the
        topic of ``Event`` (and get registered under it) with the type INSTANCE_UPDATED."""

        TOPIC = _topic("Created")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.CREATED)

    class Started(Event, Aggregate.Created):
        TOPIC = _topic("Started")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.CREATED)
        user_id: str
        user_email: str | None
        credential_id: str
        skill_id: str
        definition_id: UUID
        definition_version: int
        engine_state: dict[str, Any]
        opened_tasks: list[UUID]
        messages: list[dict[str, Any]]
        timers: list[dict[str, Any]]

    class Advanced(Event):
        """The engine moved on: a task completed, a timer fired or a message arrived."""

        TOPIC = _topic("Advanced")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        cause: str
        cause_id: str | None
        engine_state: dict[str, Any]
        opened_tasks: list[UUID]
        closed_tasks: list[UUID]
        messages: list[dict[str, Any]]
        timers: list[dict[str, Any]]

    class Completed(Event):
        TOPIC = _topic("Completed")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        result: str
        end_element_id: str
        evidence: list[dict[str, Any]]

    class Cancelled(Event):
        TOPIC = _topic("Cancelled")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        by: str
        reason: str
        closed_tasks: list[UUID]

    class Failed(Event):
        TOPIC = _topic("Failed")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        element_id: str | None
        error: str
        closed_tasks: list[UUID]

    class FileAttached(Event):
        TOPIC = _topic("FileAttached")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        file: dict[str, Any]

    class Deleted(Event):
        TOPIC = _topic("Deleted")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.DELETED)
        by: str

    class EmailSent(Event):
        """The SMTP server accepted email ``index`` of stored event ``event_id`` (ADR 0007)."""

        TOPIC = _topic("EmailSent")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        event_id: str
        index: int
        message_id: str

    class IncidentRaised(Event):
        """Something the service does by itself failed for good and waits for an admin."""

        TOPIC = _topic("IncidentRaised")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        incident_id: str
        kind: str
        subject: dict[str, Any]
        reason: str
        attempts: int

    class IncidentRetried(Event):
        TOPIC = _topic("IncidentRetried")
        EVENT_TYPE = event_type(Entity.INSTANCE, Change.UPDATED)
        incident_id: str
        by: str

    @event(Started)
    def __init__(
        self,
        *,
        id: UUID,  # noqa: A002 - eventsourcing takes the aggregate id from this argument
        user_id: str,
        user_email: str | None,
        credential_id: str,
        skill_id: str,
        definition_id: UUID,
        definition_version: int,
        engine_state: dict[str, Any],
        opened_tasks: list[UUID],
        messages: list[dict[str, Any]],
        timers: list[dict[str, Any]],
    ) -> None:
        self.user_id = user_id
        self.user_email = user_email
        self.credential_id = credential_id
        self.skill_id = skill_id
        self.definition_id = definition_id
        self.definition_version = definition_version
        self.engine_state = engine_state
        self.open_tasks: list[UUID] = list(opened_tasks)
        self.all_tasks: list[UUID] = list(opened_tasks)
        self.timers = timers
        self.status = RUNNING
        self.result: str | None = None
        self.end_element_id: str | None = None
        self.ended_at: datetime | None = None
        self.evidence: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self.cancel_reason: str | None = None
        self.cancelled_by: str | None = None
        self.received_messages: set[str] = set()
        self.emails_sent: dict[str, str] = {}
        self.incidents: dict[str, dict[str, Any]] = {}

    # -- queries -----------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self.status == RUNNING

    @property
    def data(self) -> dict[str, Any]:
        """The process data the engine publishes when the process ends; empty while it runs
        (SpiffWorkflow keeps form data on its tasks until then; the tasks' own ``data``
        holds each submission)."""
        return dict(self.engine_state.get("data", {}))

    def can_view(self, actor: Actor) -> bool:
        """Its learner and admins; a deleted instance admins only (its events stay, for the audit)."""
        return actor.is_admin or (actor.user_id == self.user_id and self.status != DELETED)

    def has_received(self, message_id: str) -> bool:
        return message_id in self.received_messages

    def email_sent(self, event_id: str, index: int) -> str | None:
        """The Message-ID email ``index`` of stored event ``event_id`` was sent with, if any."""
        return self.emails_sent.get(f"{event_id}/{index}")

    @property
    def open_incidents(self) -> list[dict[str, Any]]:
        return [i for i in self.incidents.values() if i["status"] == INCIDENT_OPEN]

    # -- commands: decide, then record ---------------------------------------------------

    def advance(
        self,
        *,
        cause: str,
        cause_id: str | None,
        engine_state: dict[str, Any],
        opened_tasks: list[UUID],
        closed_tasks: list[UUID],
        messages: list[dict[str, Any]],
        timers: list[dict[str, Any]],
    ) -> None:
        self._require_running()
        self._advanced(
            cause=cause,
            cause_id=cause_id,
            engine_state=engine_state,
            opened_tasks=opened_tasks,
            closed_tasks=closed_tasks,
            messages=messages,
            timers=timers,
        )

    def complete(self, *, result: str, end_element_id: str, evidence: list[dict[str, Any]]) -> None:
        self._require_running()
        if result not in (PASS, FAIL):
            raise Conflict(f"an instance ends in pass or fail, not {result!r}")
        self._completed(result=result, end_element_id=end_element_id, evidence=evidence)

    def cancel(self, actor: Actor, reason: str) -> list[UUID]:
        """Cancels the instance; returns the open tasks the caller must cancel with it."""
        if not (actor.is_admin or actor.user_id == self.user_id):
            raise NotAllowed("only the learner or an admin can cancel this instance")
        self._require_running()
        closed = list(self.open_tasks)
        self._cancelled(by=actor.user_id, reason=reason, closed_tasks=closed)
        return closed

    def fail(self, *, element_id: str | None, error: str) -> list[UUID]:
        self._require_running()
        closed = list(self.open_tasks)
        self._failed(element_id=element_id, error=error, closed_tasks=closed)
        return closed

    def attach_file(self, actor: Actor, file: dict[str, Any], *, max_files: int | None = None) -> None:
        self.check_can_attach(actor, max_files=max_files)
        if str(file["id"]) in self.files:
            raise Conflict(f"file {file['id']} is already attached")
        self._file_attached(file=file)

    def check_can_attach(self, actor: Actor, *, max_files: int | None = None) -> None:
        """Who may add a file, while the instance runs, up to ``max_files`` files: each is an
        event every later load of the instance decodes, so an instance's files are bounded."""
        if not (actor.is_admin or actor.user_id == self.user_id):
            raise NotAllowed("only the learner or an admin can add files to this instance")
        self._require_running()
        if max_files is not None and len(self.files) >= max_files:
            raise Conflict(f"the instance already holds {len(self.files)} files, the most one instance may hold")

    def delete(self, actor: Actor) -> None:
        if not actor.is_admin:
            raise NotAllowed("only an admin can delete an instance")
        if self.status == RUNNING:
            raise Conflict("cancel the instance before deleting it")
        if self.status != DELETED:
            self._deleted(by=actor.user_id)

    def record_email_sent(self, *, event_id: str, index: int, message_id: str) -> bool:
        """Records an accepted email once; False when it was recorded already."""
        if self.email_sent(event_id, index) is not None:
            return False
        self._email_sent(event_id=event_id, index=index, message_id=message_id)
        return True

    def raise_incident(
        self, *, incident_id: str, kind: str, subject: dict[str, Any], reason: str, attempts: int
    ) -> bool:
        """Opens an incident; False when it is open already."""
        found = self.incidents.get(incident_id)
        if found is not None and found["status"] == INCIDENT_OPEN:
            return False
        self._incident_raised(incident_id=incident_id, kind=kind, subject=subject, reason=reason, attempts=attempts)
        return True

    def retry_incident(self, actor: Actor, incident_id: str) -> None:
        if not actor.is_admin:
            raise NotAllowed("only an admin can retry an incident")
        found = self.incidents.get(incident_id)
        if found is None:
            raise NotFound(f"incident {incident_id} not found on instance {self.id}")
        if found["status"] != INCIDENT_OPEN:
            raise Conflict(f"incident {incident_id} is not open")
        self._incident_retried(incident_id=incident_id, by=actor.user_id)

    def _require_running(self) -> None:
        if self.status != RUNNING:
            raise Conflict(f"the instance is {self.status}")

    # -- mutators: assign only -------------------------------------------------------------

    @event(Advanced)
    def _advanced(
        self,
        cause: str,
        cause_id: str | None,
        engine_state: dict[str, Any],
        opened_tasks: list[UUID],
        closed_tasks: list[UUID],
        messages: list[dict[str, Any]],
        timers: list[dict[str, Any]],
    ) -> None:
        self.engine_state = engine_state
        closed = set(closed_tasks)
        self.open_tasks = [t for t in self.open_tasks if t not in closed] + list(opened_tasks)
        self.all_tasks = [*self.all_tasks, *opened_tasks]
        self.timers = timers
        if cause == MESSAGE_RECEIVED and cause_id is not None:
            self.received_messages.add(cause_id)

    # A mutator runs before eventsourcing sets ``modified_on`` to the event's time, so
    # ``ended_at`` is read from the event itself: ``timestamp`` is passed in from the
    # event on replay, and callers never give it.

    @event(Completed)
    def _completed(
        self, result: str, end_element_id: str, evidence: list[dict[str, Any]], timestamp: datetime | None = None
    ) -> None:
        self.status = COMPLETED
        self.result = result
        self.end_element_id = end_element_id
        self.evidence = evidence
        self.ended_at = timestamp
        self.open_tasks = []
        self.timers = []

    @event(Cancelled)
    def _cancelled(
        self, by: str, reason: str, closed_tasks: list[UUID], timestamp: datetime | None = None
    ) -> None:
        self.status = CANCELLED
        self.cancel_reason = reason
        self.cancelled_by = by
        self.ended_at = timestamp
        self.open_tasks = []
        self.timers = []

    @event(Failed)
    def _failed(
        self, element_id: str | None, error: str, closed_tasks: list[UUID], timestamp: datetime | None = None
    ) -> None:
        self.status = FAILED
        self.error = error
        self.ended_at = timestamp
        self.open_tasks = []
        self.timers = []

    @event(FileAttached)
    def _file_attached(self, file: dict[str, Any]) -> None:
        self.files[str(file["id"])] = file

    @event(Deleted)
    def _deleted(self, by: str) -> None:
        self.status = DELETED

    @event(EmailSent)
    def _email_sent(self, event_id: str, index: int, message_id: str) -> None:
        self.emails_sent[f"{event_id}/{index}"] = message_id

    @event(IncidentRaised)
    def _incident_raised(
        self, incident_id: str, kind: str, subject: dict[str, Any], reason: str, attempts: int,
        timestamp: datetime | None = None,
    ) -> None:
        self.incidents[incident_id] = {
            "id": incident_id, "kind": kind, "subject": subject, "reason": reason, "attempts": attempts,
            "status": INCIDENT_OPEN, "raised_at": timestamp,  # the event's own time (see _completed)
        }

    @event(IncidentRetried)
    def _incident_retried(self, incident_id: str, by: str) -> None:
        self.incidents[incident_id] = {**self.incidents[incident_id], "status": INCIDENT_RETRIED, "retried_by": by}
