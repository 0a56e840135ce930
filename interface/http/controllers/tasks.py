"""``/tasks``: inboxes and task actions (claim, hand back, complete, reassign)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from domain.errors import Unavailable
from domain.identity import Actor
from domain.task import COMPLETED, OPEN, WorkflowTask
from interface.http import schemas, views
from interface.http.commands import Outcome, run_command
from interface.http.controllers.definitions import require_admin
from interface.http.openapi import COMMAND_ERRORS, IdempotencyKey, IfMatch, errors
from interface.http.pagination import Limit, WaitFor
from interface.http.services import Services

Inbox = Literal["mine", "groups", "all"]
Sort = Literal["created_at"]
TaskStatus = Literal["open", "completed", "cancelled"]


class TaskController(Controller):
    path = "/tasks"
    tags = ["tasks"]

    @get("/", responses=errors(400, 403, 422), summary="Task inbox")
    async def inbox(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services],
        inbox: Annotated[Inbox, QueryParameter(description="`mine`: assigned to me; `groups`: open tasks offered to my groups; `all`: every task (admins)")] = "mine",
        status: Annotated[TaskStatus, QueryParameter(description="open, completed or cancelled")] = "open",
        credential_id: FromQuery[str | None] = None, skill_id: FromQuery[str | None] = None, instance_id: FromQuery[UUID | None] = None,
        due_before: Annotated[str | None, QueryParameter(
            description="only tasks due before this RFC 3339 date-time (UTC when it has no offset)",
            schema_extra={"format": "date-time"})] = None,
        unassigned: Annotated[bool | None, QueryParameter(description="groups scope: only tasks nobody claimed")] = None,
        sort: Annotated[Sort, QueryParameter(description="oldest first by creation (the only order yet)")] = "created_at",
        cursor: FromQuery[str | None] = None, limit: Limit = 50, wait_for: WaitFor = None,
    ) -> schemas.TaskPage:
        """My tasks, or my groups' tasks, filtered and sorted, one page at a time."""
        if services.queries is None:
            raise Unavailable("task inboxes need the read models, which are not running")
        return await services.read(
            services.queries.tasks_page, request.user, inbox=inbox, status=status,
            credential_id=credential_id, skill_id=skill_id, instance_id=instance_id,
            due_before=_query_instant("due_before", due_before), unassigned=unassigned, sort=sort, cursor=cursor,
            limit=limit,
            wait_for=wait_for,
        )

    @get("/{task_id:uuid}", responses=errors(404), summary="One task, with its form")
    async def one(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], task_id: FromPath[UUID]
    ) -> Response[schemas.TaskDetail]:
        """The task, its instructions and the JSON Schema its completion data must satisfy."""
        service = services.service

        def load() -> tuple[Any, schemas.TaskDetail]:
            task = service.visible_task(request.user, task_id)
            return task, views.task_detail(task, service.task_form(task))

        task, body = await services.run(load)
        return Response(body, headers={"ETag": views.etag(task)})

    @post("/{task_id:uuid}/claim", status_code=200, responses=errors(*COMMAND_ERRORS), summary="Claim a task")
    async def claim(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], task_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Task]:
        """A member of the task's group takes it; claiming a task you hold changes nothing."""
        return await self._act(request, services, task_id, "claim_task",
                               lambda: services.service.claim_task(request.user, task_id),
                               recover=_recover_when(services, request.user, task_id,
                                                     lambda task: task.assignee == request.user.user_id))

    @post("/{task_id:uuid}/unclaim", status_code=200, responses=errors(*COMMAND_ERRORS),
          summary="Hand a task back to its group")
    async def unclaim(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], task_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Task]:
        """The assignee (or an admin) hands the task back to its group."""
        return await self._act(request, services, task_id, "unclaim_task",
                               lambda: services.service.unclaim_task(request.user, task_id),
                               recover=_recover_when(services, request.user, task_id,
                                                     lambda task: task.assignee is None))

    @post("/{task_id:uuid}/reassign", status_code=200, responses=errors(*COMMAND_ERRORS),
          summary="Reassign a task (admins)")
    async def reassign(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], task_id: FromPath[UUID],
        data: JSONBody[schemas.ReassignTask], idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Task]:
        """An admin gives the task to another user."""
        require_admin(request.user, "reassign a task")  # before If-Match: a 403 is not a 412
        return await self._act(request, services, task_id, "reassign_task",
                               lambda: services.service.reassign_task(request.user, task_id, data.assignee),
                               payload=data, recover=_recover_when(services, request.user, task_id,
                                                                   lambda task: task.assignee == data.assignee))

    @post("/{task_id:uuid}/complete", status_code=200, responses=errors(*COMMAND_ERRORS),
          summary="Complete a task")
    async def complete(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], task_id: FromPath[UUID],
        data: JSONBody[schemas.CompleteTask], idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Task]:
        """The assignee submits the form data (validated against the task's `form`; every failing
        field is reported with its JSON path); the process moves on. A manual task takes `{}`."""
        actor, service = request.user, services.service

        def recover(_key: str | None) -> Outcome | None:
            task = service.visible_task(actor, task_id)
            done = task.status == COMPLETED and task.completed_by == actor.user_id and task.data == data.data
            return _outcome(task) if done else None

        return await self._act(request, services, task_id, "complete_task",
                               lambda: service.complete_task(actor, task_id, data.data),
                               payload=data, recover=recover)

    @staticmethod
    async def _act(
        request: Request[Actor, Any, Any], services: Services, task_id: UUID, name: str, act: Any,
        payload: Any = None, recover: Any = None,
    ) -> Response[Any]:
        service = services.service

        def decide(_key: str | None) -> Outcome:
            act()
            return _outcome(service.current(WorkflowTask, task_id, "task"))

        return await run_command(
            request, services, name, decide, payload=payload, recover=recover,
            entity_of=lambda: service.visible_task(request.user, task_id),
        )


def _query_instant(name: str, text: str | None) -> datetime | None:
    """A date-time query parameter, read as text: typed as a date-time, a number was taken
    for a Unix time and one past the year 9999 was a 500."""
    if text is None:
        return None
    try:
        return msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise ValidationException("the request parameters are not valid", extra=[
            {"source": "query", "key": name, "message": "an RFC 3339 date-time, e.g. 2026-12-01T09:00:00Z"}]) from None


def _recover_when(services: Services, actor: Actor, task_id: UUID, holds: Callable[[Any], bool]) -> Any:
    """A keyed retry's answer when the open task already is as the command would leave it
    and this user made that last change (its first attempt saved, and lost its answer): the
    task as it is; None otherwise. Without the second condition a user who may not run the
    command (an assessor reassigning, a learner handing back) was answered 200 for the state
    someone else left."""
    def recover(_key: str | None) -> Outcome | None:
        task = services.service.visible_task(actor, task_id)
        mine = task.assignment_by == actor.user_id
        return _outcome(task) if task.status == OPEN and mine and holds(task) else None

    return recover


def _outcome(task: Any) -> Outcome:
    return Outcome(views.task(task), 200, views.etag(task))
