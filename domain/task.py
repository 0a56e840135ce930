"""WorkflowTask: one user or manual task of an instance, from ready to done.

A task in the ``Learner`` lane belongs to the instance's user from the start. A task in any
other lane is offered to the group the lane names: a member claims it, and only the
assignee completes it. Nothing happens to a completed or cancelled task.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, InvalidInput, NotAllowed, Problem
from domain.event_types import Change, Entity, aggregate_topic, event_type, stored_topic
from domain.identity import Actor

OPEN, COMPLETED, CANCELLED, DELETED = "open", "completed", "cancelled", "deleted"
USER_TASK, MANUAL_TASK = "user", "manual"
# Nobody assesses their own credential, whatever groups they are in.
OWN_WORK = "a learner cannot work on the group tasks of their own instance"
MAX_ASSIGNEE_CHARS = 255  # a user id, as a token's sub (OpenID Connect's limit)


def _topic(fact: str) -> str:
    return stored_topic("Task", fact)


class WorkflowTask(Aggregate):
    TOPIC = aggregate_topic("Task")

    class Event(Aggregate.Event):
        TOPIC = _topic("Event")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)

    class Created(Event, Aggregate.Created):
        TOPIC = _topic("Created")
        EVENT_TYPE = event_type(Entity.TASK, Change.CREATED)
        instance_id: UUID
        learner_id: str
        credential_id: str
        skill_id: str
        engine_task_id: str
        element_id: str
        name: str
        kind: str
        candidate_group: str | None
        assignee: str | None
        form: str | None
        documentation: str
        due_at: datetime | None

    class Claimed(Event):
        TOPIC = _topic("Claimed")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        by: str

    class Unclaimed(Event):
        TOPIC = _topic("Unclaimed")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        by: str

    class Reassigned(Event):
        TOPIC = _topic("Reassigned")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        by: str
        assignee: str

    class Completed(Event):
        TOPIC = _topic("Completed")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        by: str
        data: dict[str, Any]
        evidence: list[dict[str, Any]]

    class Cancelled(Event):
        TOPIC = _topic("Cancelled")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        reason: str

    class Deleted(Event):
        TOPIC = _topic("Deleted")
        EVENT_TYPE = event_type(Entity.TASK, Change.DELETED)
        by: str

    class Reminded(Event):
        """The task is close to its due date; ``messages`` are the reminder emails (ADR 0007)."""

        TOPIC = _topic("Reminded")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        due_at: datetime
        instance_id: UUID
        messages: list[dict[str, Any]]

    class BecameOverdue(Event):
        TOPIC = _topic("BecameOverdue")
        EVENT_TYPE = event_type(Entity.TASK, Change.UPDATED)
        due_at: datetime

    @event(Created)
    def __init__(
        self,
        *,
        id: UUID,  # noqa: A002 - eventsourcing takes the aggregate id from this argument
        instance_id: UUID,
        learner_id: str,
        credential_id: str,
        skill_id: str,
        engine_task_id: str,
        element_id: str,
        name: str,
        kind: str,
        candidate_group: str | None,
        assignee: str | None,
        form: str | None,
        documentation: str,
        due_at: datetime | None,
    ) -> None:
        self.instance_id = instance_id
        self.learner_id = learner_id
        self.credential_id = credential_id
        self.skill_id = skill_id
        self.engine_task_id = engine_task_id
        self.element_id = element_id
        self.name = name
        self.kind = kind
        self.candidate_group = candidate_group
        self.assignee = assignee
        # Who made the last claim, unclaim or reassignment: a keyed retry is answered as its
        # first attempt's success only when that attempt was this user's (interface/http).
        self.assignment_by: str | None = None
        self.form = form
        self.documentation = documentation
        self.due_at = due_at
        self.status = OPEN
        self.completed_by: str | None = None
        self.completed_at: datetime | None = None
        self.data: dict[str, Any] = {}
        self.evidence: list[dict[str, Any]] = []
        self.cancel_reason: str | None = None
        self.reminded = False
        self.overdue = False

    # -- queries -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    @property
    def is_learner_task(self) -> bool:
        return self.candidate_group is None

    def can_view(self, actor: Actor) -> bool:
        """Admins; else, unless it was deleted, its learner, its assignee and its group."""
        return actor.is_admin or (self.status != DELETED and (
            actor.user_id in (self.assignee, self.learner_id) or actor.is_member(self.candidate_group)))

    # -- commands: decide, then record ---------------------------------------------------

    def claim(self, actor: Actor) -> None:
        self._require_open()
        if self.assignee == actor.user_id:
            return
        if self.is_learner_task:
            raise NotAllowed("this task belongs to the learner and cannot be claimed")
        if actor.user_id == self.learner_id:
            raise NotAllowed(OWN_WORK)
        if not actor.is_member(self.candidate_group):
            raise NotAllowed(f"only members of group '{self.candidate_group}' can claim this task")
        if self.assignee is not None:
            raise Conflict("the task is already claimed by another user")
        self._claimed(by=actor.user_id)

    def unclaim(self, actor: Actor) -> None:
        self._require_open()
        if self.is_learner_task:
            raise NotAllowed("this task belongs to the learner and cannot be handed back")
        if self.assignee is None:
            # Already back with its group: nothing to do, for those who may take it or hand
            # it back (a repeated unclaim); anyone else is refused as for a claimed task.
            if not (actor.is_admin or actor.is_member(self.candidate_group)):
                raise NotAllowed("only the assignee or an admin can hand this task back")
            return
        if self.assignee != actor.user_id and not actor.is_admin:
            raise NotAllowed("only the assignee or an admin can hand this task back")
        self._unclaimed(by=actor.user_id)

    def reassign(self, actor: Actor, assignee: str) -> None:
        if not actor.is_admin:
            raise NotAllowed("only an admin can reassign a task")
        self._require_open()
        if not isinstance(assignee, str) or not assignee.strip() or len(assignee) > MAX_ASSIGNEE_CHARS:
            raise InvalidInput("the new assignee must be a user id",
                               [Problem("$.assignee", f"a non-empty user id of at most {MAX_ASSIGNEE_CHARS} characters")])
        if not self.is_learner_task and assignee == self.learner_id:
            raise NotAllowed(OWN_WORK)
        if assignee != self.assignee:
            self._reassigned(by=actor.user_id, assignee=assignee)

    def check_can_complete(self, actor: Actor) -> None:
        """The state and permission rules of ``complete``, checked before the form is: a
        cancelled task is a conflict whatever data comes with it."""
        self._require_open()
        if not self.is_learner_task and actor.user_id == self.learner_id:
            raise NotAllowed(OWN_WORK)
        if self.assignee is None:
            if actor.is_member(self.candidate_group):
                raise Conflict("claim the task before completing it")
            raise NotAllowed("only the assignee can complete this task")
        if self.assignee != actor.user_id:
            raise NotAllowed("only the assignee can complete this task")

    def complete(
        self, actor: Actor, data: dict[str, Any], evidence: list[dict[str, Any]] | None = None
    ) -> None:
        self.check_can_complete(actor)
        self._completed(by=actor.user_id, data=data, evidence=list(evidence or []))

    def cancel(self, reason: str) -> None:
        """The engine withdrew the task or its instance ended: idempotent."""
        if self.is_open:
            self._cancelled(reason=reason)

    def delete(self, actor: Actor) -> None:
        if self.status != DELETED:
            self._deleted(by=actor.user_id)

    def remind(self) -> bool:
        """Records the reminder email before the due date, once; False if nothing to do."""
        if not self.is_open or self.due_at is None or self.reminded:
            return False
        recipient = {"to": "learner"} if self.is_learner_task else {"to_group": self.candidate_group}
        email = {"name": "email", "payload": {"template": "task_reminder", **recipient}, "correlations": {}}
        self._reminded(due_at=self.due_at, instance_id=self.instance_id, messages=[email])
        return True

    def mark_overdue(self) -> bool:
        """Records that the due date passed with the task still open, once."""
        if not self.is_open or self.due_at is None or self.overdue:
            return False
        self._became_overdue(due_at=self.due_at)
        return True

    def _require_open(self) -> None:
        if self.status != OPEN:
            raise Conflict(f"the task is {self.status}")

    # -- mutators: assign only -------------------------------------------------------------

    @event(Claimed)
    def _claimed(self, by: str) -> None:
        self.assignee = by
        self.assignment_by = by

    @event(Unclaimed)
    def _unclaimed(self, by: str) -> None:
        self.assignee = None
        self.assignment_by = by

    @event(Reassigned)
    def _reassigned(self, by: str, assignee: str) -> None:
        self.assignee = assignee
        self.assignment_by = by

    # A mutator runs before eventsourcing sets ``modified_on`` to the event's time, so
    # "when it happened" is read from the event itself: ``timestamp`` is passed in from
    # the event on replay, and callers never give it.

    @event(Completed)
    def _completed(
        self, by: str, data: dict[str, Any], evidence: list[dict[str, Any]], timestamp: datetime | None = None
    ) -> None:
        self.status = COMPLETED
        self.completed_by = by
        self.completed_at = timestamp
        self.data = data
        self.evidence = evidence

    @event(Cancelled)
    def _cancelled(self, reason: str) -> None:
        self.status = CANCELLED
        self.cancel_reason = reason

    @event(Deleted)
    def _deleted(self, by: str) -> None:
        self.status = DELETED

    @event(Reminded)
    def _reminded(self, due_at: datetime, instance_id: UUID, messages: list[dict[str, Any]]) -> None:
        self.reminded = True

    @event(BecameOverdue)
    def _became_overdue(self, due_at: datetime) -> None:
        self.overdue = True
