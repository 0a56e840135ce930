"""``/deployments``: one per catalog skill, keyed by the skill id; admins activate and
retire them."""

from __future__ import annotations

from typing import Any

from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar import Controller, Request, Response, get, post

from domain.deployment import ACTIVE, RETIRED
from domain.errors import Unavailable
from domain.identity import Actor
from interface.http import schemas, views
from interface.http.commands import Outcome, last_by, run_command
from interface.http.controllers.definitions import require_admin
from interface.http.openapi import COMMAND_ERRORS, IdempotencyKey, IfMatch, errors
from interface.http.pagination import Limit, WaitFor
from interface.http.services import Services


class DeploymentController(Controller):
    path = "/deployments"
    tags = ["deployments"]

    @get("/", responses=errors(400, 403, 422), summary="Deployments")
    async def list_all(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], cursor: FromQuery[str | None] = None, limit: Limit = 50,
        wait_for: WaitFor = None,
    ) -> schemas.DeploymentPage:
        """Every deployment with the definition version each credential is pinned to."""
        require_admin(request.user, "list deployments")
        if services.queries is None:
            raise Unavailable("deployment lists need the read models, which are not running")
        return await services.read(services.queries.deployments_page, request.user, cursor=cursor, limit=limit,
                                   wait_for=wait_for)

    @get("/{skill_id:str}", responses=errors(403, 404), summary="One deployment")
    async def one(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], skill_id: FromPath[str]
    ) -> Response[schemas.Deployment]:
        require_admin(request.user, "read deployments")
        deployment = await services.run(services.service.get_deployment, skill_id)
        return Response(views.deployment(deployment), headers={"ETag": views.etag(deployment)})

    @post("/{skill_id:str}/activate", status_code=200, responses=errors(*COMMAND_ERRORS),
          summary="Activate a deployment")
    async def activate(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], skill_id: FromPath[str],
        idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Deployment]:
        """New instances of the skill's credentials can start again."""
        return await _set_status(request, services, skill_id, ACTIVE)

    @post("/{skill_id:str}/retire", status_code=200, responses=errors(*COMMAND_ERRORS),
          summary="Retire a deployment")
    async def retire(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], skill_id: FromPath[str],
        idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Deployment]:
        """Nothing new starts; running instances finish."""
        return await _set_status(request, services, skill_id, RETIRED)


async def _set_status(
    request: Request[Actor, Any, Any], services: Services, skill_id: str, status: str
) -> Response[Any]:
    actor, service = request.user, services.service
    require_admin(actor, "activate or retire deployments")

    def decide(_key: str | None) -> Outcome:
        service.set_deployment_status(actor, skill_id, status)
        deployment = service.get_deployment(skill_id)
        return Outcome(views.deployment(deployment), 200, views.etag(deployment))

    def recover(_key: str | None) -> Outcome | None:
        deployment = service.get_deployment(skill_id)
        if deployment.deleted or deployment.status != status:
            return None
        if last_by(service, deployment.id, "StatusChanged", status=status) != actor.user_id:
            return None  # another admin's change: this request's If-Match no longer holds
        return Outcome(views.deployment(deployment), 200, views.etag(deployment))

    return await run_command(request, services, f"{'activate' if status == ACTIVE else 'retire'}_deployment",
                             decide, entity_of=lambda: service.get_deployment(skill_id), recover=recover)
