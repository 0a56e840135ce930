"""``create_app(settings)``: the one place the HTTP API is wired.

The factory takes its dependencies (a ready ``WorkflowService`` in tests, nothing in
production); resources are opened in the lifespan and closed after it: the database
(embedded or external), the workflow service, a small pool for the API's own tables, the
idempotency store. Controllers are mounted from ``CONTROLLERS`` plus ``extra_controllers``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from psycopg_pool import ConnectionPool

from application.bootstrap import bootstrap
from application.database import Database, open_database
from application.idempotency import IdempotencyStore
from application.service import WorkflowService
from application.settings import Settings
from domain.errors import InvalidInput, Problem
from interface.http.auth import PUBLIC_PATHS, BearerAuthentication, verifier_from
from interface.http.controllers import CONTROLLERS
from interface.http.observability import Metrics, ObservabilityMiddleware
from interface.http.openapi import openapi_config
from interface.http.problems import EXCEPTION_HANDLERS
from interface.http.read_models import ReadModels
from interface.http.services import Services

log = logging.getLogger("skillbase.workflow.http")
API_VERSION = "1.0.0"
JSON_TYPES = ("application/json",)


def create_app(
    settings: Settings,
    *,
    service: WorkflowService | None = None,
    database: Database | None = None,
    queries: Any = None,
    extra_controllers: Sequence[Any] = (),
    on_ready: Any = None,
    run_projections: bool = False,
    run_kafka: bool = False,
    run_workers: bool = False,
) -> Litestar:
    """The API. ``service``/``database`` are opened from ``settings`` when not given (a
    given service is not closed by the app). ``on_ready(service)`` runs once the service is
    open, before the first request (``serve`` loads the example catalog there).
    ``run_projections`` runs the read-model projections in this process, ``run_kafka`` the
    Kafka relay and catalog consumer (when Kafka is configured), ``run_workers`` the mail
    worker and the timer scheduler: ``serve`` does all three."""
    if settings.http_command_threads < 1:
        raise ValueError(f"SKILLBASE_WORKFLOW_HTTP_COMMAND_THREADS must be at least 1, got {settings.http_command_threads}")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = database or open_database(settings)
        owned = service is None
        workflow = service or bootstrap(settings, database=db)
        pool = ConnectionPool(db.conninfo(), min_size=1, max_size=max(2, settings.database_pool_size),
                              open=False, name="http-api", kwargs={"autocommit": True})
        pool.open(wait=False)
        ready_pool = ConnectionPool(db.conninfo(), min_size=1, max_size=1, open=False, name="http-ready",
                                    kwargs={"autocommit": True}, timeout=2)
        ready_pool.open(wait=False)
        try:
            idempotency = IdempotencyStore(pool, db.schema)
            idempotency.create_table()
            idempotency.purge()
            if on_ready is not None:
                on_ready(workflow)
            readers = _Readers()
            if run_projections:
                from projections.service import start_projections

                readers.projections = start_projections(workflow, settings)
            if run_kafka and settings.kafka_enabled:
                from interface.kafka.link import start_kafka

                readers.kafka = start_kafka(workflow, settings)
            if run_workers:
                from application.workers import start_workers

                readers.workers = start_workers(workflow, settings)
            metrics.watch_log(workflow.recorder.max_notification_id, readers.positions)
            app.state.services = Services(settings=settings, service=workflow, pool=pool,
                                          idempotency=idempotency, metrics=metrics, ready_pool=ready_pool,
                                          queries=_resolve(queries, workflow, pool, db))
            try:
                yield
            finally:
                await readers.stop()
        finally:
            ready_pool.close()
            pool.close()
            if owned:
                workflow.close()

    return Litestar(
        route_handlers=[*CONTROLLERS, *extra_controllers],
        lifespan=[lifespan],
        state=State({"verifier": verifier_from(settings), "metrics": metrics}),
        dependencies={"services": Provide(_services, sync_to_thread=False)},
        middleware=[ObservabilityMiddleware, DefineMiddleware(BearerAuthentication, exclude=PUBLIC_PATHS)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=check_request,
        openapi_config=openapi_config(API_VERSION),
        request_max_body_size=max(1024 * 1024, 2 * settings.bundle_max_bytes + 64 * 1024),
        debug=False,
        logging_config=None,
    )


def _services(state: State) -> Services:
    return state.services


async def check_request(request: Request) -> None:
    """Before every handler. A NUL character in a query parameter is a 422 naming it:
    PostgreSQL text cannot hold one, and the filters reach SQL. A body that is not JSON is a
    415 on routes that take JSON (all but those that declare ``opt={"raw_body": True}``, the
    file upload, or ``opt={"accepts": (...)}``). A request without a body passes whatever
    type it declares: some clients label an empty POST ``application/octet-stream``."""
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidInput("a query parameter holds a NUL character",
                               [Problem(f"query:{name.replace(chr(0), '')}", "NUL (\\u0000) is not allowed")])
    if request.method not in ("POST", "PUT", "PATCH") or request.route_handler.opt.get("raw_body"):
        return
    accepts = request.route_handler.opt.get("accepts", JSON_TYPES)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        return
    if content_type not in accepts and not content_type.endswith("+json"):
        raise HTTPException(status_code=415, detail=f"send the body as {' or '.join(accepts)}")


def _resolve(queries: Any, service: WorkflowService, pool: ConnectionPool, database: Database) -> Any:
    """The read-model queries: ``ReadModels`` over ``application.queries`` unless given."""
    if queries is None:
        return ReadModels.of(service)
    return queries(service, pool, database) if callable(queries) else queries


@dataclass
class _Readers:
    """The log readers this process runs: projections and the Kafka link, for lag metrics."""

    projections: Any = None
    kafka: Any = None
    workers: Any = None

    def positions(self) -> dict[str, int]:
        found = {}
        for runner in getattr(self.projections, "runners", []):
            if runner.position is not None:
                found[f"projection:{runner.name}"] = runner.position
        if self.kafka is not None:
            found.update({f"kafka:{name}": position for name, position in self.kafka.positions().items()})
        return found

    async def stop(self) -> None:
        if self.workers is not None:
            await anyio.to_thread.run_sync(self.workers.stop)
        if self.kafka is not None:
            await self.kafka.stop()
        if self.projections is not None:
            await anyio.to_thread.run_sync(self.projections.stop)
