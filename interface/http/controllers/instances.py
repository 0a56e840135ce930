"""``/instances``: start, follow and cancel a credential."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from litestar.di import NamedDependency
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from domain.errors import IdTaken, InvalidInput, Problem, Unavailable
from domain.identity import Actor
from domain.ids import command_id, scope_part
from domain.instance import CANCELLED, DELETED, INCIDENT_RETRIED, WorkflowInstance
from interface.http import schemas, views
from interface.http.commands import Outcome, run_command
from interface.http.controllers.definitions import require_admin
from interface.http.openapi import COMMAND_ERRORS, IdempotencyKey, IfMatch, errors
from interface.http.pagination import Limit, WaitFor
from interface.http.services import Services

InstanceStatus = Literal["running", "completed", "cancelled", "failed"]


class InstanceController(Controller):
    path = "/instances"
    tags = ["instances"]

    @post("/", status_code=201, responses=errors(*COMMAND_ERRORS), summary="Start a credential")
    async def start(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], data: JSONBody[schemas.StartInstance],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[schemas.Instance]:
        """Starts the caller working towards `credential_id`, on the definition version its skill's
        deployment pins. With an `Idempotency-Key`, the instance id derives from the key: a retry
        can never start a second instance."""
        actor, service = request.user, services.service

        def decide(key: str | None) -> Outcome:
            wanted = command_id(f"start-instance/{scope_part(actor.user_id)}", key) if key else None
            try:
                started = service.start_instance(actor, data.credential_id, wanted)
            except IdTaken:
                # The key started another credential before (its stored answer lost, or
                # purged after 7 days): the same key with another request.
                raise InvalidInput("this Idempotency-Key was already used with a different request",
                                   [Problem("header:Idempotency-Key", "use a new key for a new request")]) from None
            instance = service.current(WorkflowInstance, started, "instance")
            return Outcome(views.instance(instance), 201, views.etag(instance), f"/instances/{instance.id}")

        return await run_command(request, services, "start_instance", decide, payload=data)

    @get("/", responses=errors(400, 403, 422), summary="My instances")
    async def list_mine(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services],
        status: Annotated[InstanceStatus | None, QueryParameter(description="running, completed, cancelled or failed")] = None,
        credential_id: FromQuery[str | None] = None,
        user_id: Annotated[str | None, QueryParameter(description="admins only: another user's instances")] = None,
        cursor: FromQuery[str | None] = None, limit: Limit = 50, wait_for: WaitFor = None,
    ) -> schemas.InstancePage:
        """The caller's instances, newest first (admins may ask for any user's)."""
        if services.queries is None:
            raise Unavailable("instance lists need the read models, which are not running")
        return await services.read(
            services.queries.instances_page, request.user, status=status, credential_id=credential_id,
            user_id=user_id, cursor=cursor, limit=limit, wait_for=wait_for,
        )

    @get("/{instance_id:uuid}", responses=errors(404), summary="One instance")
    async def one(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID]
    ) -> Response[schemas.InstanceDetail]:
        """The instance with its open tasks and a summary of its history. A learner gets 404 for
        another learner's instance: it may not learn that it exists."""
        service = services.service

        def load() -> tuple[Any, schemas.InstanceDetail]:
            instance, events = service.visible_instance_with_history(request.user, instance_id)
            tasks = service.get_tasks(instance.open_tasks)
            return instance, views.instance_detail(instance, tasks, events)

        instance, body = await services.run(load)
        return Response(body, headers={"ETag": views.etag(instance)})

    @post("/{instance_id:uuid}/cancel", responses=errors(*COMMAND_ERRORS), status_code=200,
          summary="Cancel an instance")
    async def cancel(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID],
        data: JSONBody[schemas.CancelInstance], idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Instance]:
        """Cancels a running instance (its learner or an admin) and withdraws its open tasks."""
        actor, service = request.user, services.service

        def decide(_key: str | None) -> Outcome:
            service.cancel_instance(actor, instance_id, data.reason)
            return _outcome(service.current(WorkflowInstance, instance_id, "instance"))

        def recover(_key: str | None) -> Outcome | None:
            instance = service.visible_instance(actor, instance_id)
            done = (instance.status == CANCELLED and instance.cancel_reason == data.reason
                    and instance.cancelled_by == actor.user_id)
            return _outcome(instance) if done else None

        return await run_command(
            request, services, "cancel_instance", decide, payload=data, recover=recover,
            entity_of=lambda: service.visible_instance(actor, instance_id),
        )


    @delete("/{instance_id:uuid}", status_code=200, responses=errors(*COMMAND_ERRORS),
            summary="Delete an instance that has ended (admins)")
    async def remove(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Instance]:
        """Removes a completed, cancelled or failed instance and its tasks (a running one is a
        409: cancel it first). Its events stay in the store for the audit; the rest of skillbase
        hears `SKILLBASE_WORKFLOW_INSTANCE_DELETED` and `…_TASK_DELETED`. Again: no change."""
        actor, service = request.user, services.service
        require_admin(actor, "delete an instance")

        def decide(_key: str | None) -> Outcome:
            service.delete_instance(actor, instance_id)
            return _outcome(service.current(WorkflowInstance, instance_id, "instance"))

        def recover(_key: str | None) -> Outcome | None:
            instance = service.visible_instance(actor, instance_id)
            return _outcome(instance) if instance.status == DELETED else None

        return await run_command(request, services, "delete_instance", decide, recover=recover,
                                 entity_of=lambda: service.visible_instance(actor, instance_id))

    @post("/{instance_id:uuid}/incidents/{incident_id:str}/retry", status_code=200,
          responses=errors(*COMMAND_ERRORS), summary="Retry an incident (admins)")
    async def retry_incident(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID],
        incident_id: FromPath[str], idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Instance]:
        """Tries again what the service gave up on: an email goes back to the outbox with fresh
        attempts. The incident must be open (409 otherwise); `GET /instances/{id}` lists them."""
        actor, service = request.user, services.service
        require_admin(actor, "retry an incident")

        def decide(_key: str | None) -> Outcome:
            service.retry_incident(actor, instance_id, incident_id)
            return _outcome(service.current(WorkflowInstance, instance_id, "instance"))

        def recover(_key: str | None) -> Outcome | None:
            instance = service.visible_instance(actor, instance_id)
            found = instance.incidents.get(incident_id) or {}
            done = found.get("status") == INCIDENT_RETRIED and found.get("retried_by") == actor.user_id
            return _outcome(instance) if done else None

        return await run_command(request, services, "retry_incident", decide, recover=recover,
                                 entity_of=lambda: service.visible_instance(actor, instance_id))


def _outcome(instance: Any) -> Outcome:
    return Outcome(views.instance(instance), 200, views.etag(instance))
