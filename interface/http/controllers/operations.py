"""Health, readiness, metrics, dashboards and the audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from litestar.di import NamedDependency
from litestar import Controller, Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from domain.errors import NotFound, Unavailable
from domain.identity import Actor
from domain.ids import definition_id, deployment_id
from interface.http import schemas, views
from interface.http.controllers.definitions import require_admin
from interface.http.openapi import errors
from interface.http.pagination import Limit, WaitFor
from interface.http.problems import problem
from interface.http.services import Services

Entity = Literal["instance", "task", "definition", "deployment"]
_CLASS = {"instance": "WorkflowInstance", "task": "WorkflowTask", "definition": "WorkflowDefinition",
          "deployment": "WorkflowDeployment"}
_BY_CATALOG_ID = {"definition": definition_id, "deployment": deployment_id}


class OperationsController(Controller):
    path = "/"
    tags = ["operations"]

    @get("/health", security=[], exclude_from_auth=True, summary="Liveness")
    async def health(self) -> schemas.Health:
        """The process is up. Needs no token."""
        return schemas.Health(status="ok")

    @get("/ready", security=[], exclude_from_auth=True, responses=errors(), summary="Readiness")
    async def ready(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Response[schemas.Readiness]:
        """The database answers. Needs no token; 503 with Retry-After when it does not."""
        try:
            await services.operate(services.database_answers)
        except Exception:  # noqa: BLE001 - any failure means: not ready
            return problem(request, 503, "the database is not answering", headers={"Retry-After": "5"})
        return Response(schemas.Readiness(status="ready", database="ok"))

    @get("/metrics", media_type="text/plain", responses=errors(403), summary="Prometheus metrics (admins)")
    async def metrics(self, request: Request[Actor, Any, Any], services: NamedDependency[Services]) -> Response[bytes]:
        """Request rate and latency per route, commands by type and result, event log head."""
        require_admin(request.user, "read metrics")
        body = await services.operate(generate_latest, services.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @get("/dashboard", responses=errors(400, 403, 422), summary="Dashboard (admins)")
    async def dashboard(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services],
        credential_id: FromQuery[str | None] = None, skill_id: FromQuery[str | None] = None,
        wait_for: WaitFor = None,
    ) -> schemas.Dashboard:
        """One credential's or one skill's figures: instances by status, pass rate, median and p90
        time to complete, open tasks per group, overdue tasks."""
        require_admin(request.user, "read dashboards")
        if services.queries is None:
            raise Unavailable("dashboards need the read models, which are not running")
        return await services.read(services.queries.dashboard, request.user, credential_id=credential_id,
                                   skill_id=skill_id, wait_for=wait_for)

    @get("/audit/{entity:str}/{entity_id:uuid}", responses=errors(400, 403, 404), summary="Audit trail (admins)")
    async def audit(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], entity: FromPath[Entity], entity_id: FromPath[UUID],
        cursor: Annotated[str | None, QueryParameter(pattern=r"^[0-9]{1,9}$", description="`next_cursor` of the previous page")] = None,
        limit: Limit = 100,
    ) -> schemas.AuditHistory:
        """Every stored event of one entity, in order: who did what and when, as published. A
        definition is named by its id or its credential id, a deployment by its id or its skill
        id; `id` in the answer is the aggregate id."""
        require_admin(request.user, "read the audit trail")

        after = int(cursor) if cursor else None

        def events_of(aggregate_id: UUID) -> list[Any]:
            events = list(services.service.events.get(aggregate_id, gt=after, limit=limit + 1))
            if events and not type(events[0]).__qualname__.startswith(_CLASS[entity] + "."):
                return []
            return events

        def exists(aggregate_id: UUID) -> bool:
            first = list(services.service.events.get(aggregate_id, limit=1))
            return bool(first) and type(first[0]).__qualname__.startswith(_CLASS[entity] + ".")

        def load() -> schemas.AuditHistory:
            aggregate_id, events = entity_id, events_of(entity_id)
            if not events and entity in _BY_CATALOG_ID:
                # A credential or skill id (the catalog's) names its definition or deployment.
                mapped = _BY_CATALOG_ID[entity](str(entity_id))
                found = events_of(mapped)
                if found or (after and not exists(entity_id) and exists(mapped)):
                    aggregate_id, events = mapped, found
            # Nothing after a cursor is the end of a known entity's trail, not of an unknown one.
            if not events and not (after and exists(aggregate_id)):
                raise NotFound(f"{entity} {entity_id} not found")
            page = events[:limit]
            cursor = str(page[-1].originator_version) if len(events) > limit else None
            return schemas.AuditHistory(entity=entity, id=aggregate_id, next_cursor=cursor,
                                        items=[views.audit_entry(e, entity) for e in page])

        return await services.run(load)
