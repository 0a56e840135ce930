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

from domain.errors import Conflict, NotAllowed
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
        self.timers = timers
        self.status = RUNNING
        self.result: str | None = None
        self.end_element_id: str | None = None
        self.ended_at: datetime | None = None
        self.evidence: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self.cancel_reason: str | None = None

    # -- queries -----------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self.status == RUNNING

    @property
    def data(self) -> dict[str, Any]:
        """The process data as the engine holds it (form fields of completed tasks)."""
        return dict(self.engine_state.get("data", {}))

    def can_view(self, actor: Actor) -> bool:
        return actor.is_admin or actor.user_id == self.user_id

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

    def attach_file(self, actor: Actor, file: dict[str, Any]) -> None:
        if not (actor.is_admin or actor.user_id == self.user_id):
            raise NotAllowed("only the learner or an admin can add files to this instance")
        self._require_running()
        if str(file["id"]) in self.files:
            raise Conflict(f"file {file['id']} is already attached")
        self._file_attached(file=file)

    def delete(self, actor: Actor) -> None:
        if not actor.is_admin:
            raise NotAllowed("only an admin can delete an instance")
        if self.status == RUNNING:
            raise Conflict("cancel the instance before deleting it")
        if self.status != DELETED:
            self._deleted(by=actor.user_id)

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
        self.timers = timers

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
