"""What the controllers use, opened once in the app's lifespan: the workflow service,
the idempotency store, a small pool for the API's own queries, a connection of its own for
readiness, the metrics.

eventsourcing and psycopg are synchronous, so every call goes through ``run`` (commands and
entity reads: ``http_command_threads`` worker threads), ``read`` (read-model lists: one
thread per connection of the read pool, so they never queue on it) or ``operate``
(readiness and metrics: two threads of their own). Three bulkheads: lists that wait for a
log position cannot take the threads commands need, and commands stuck on a database that
is down cannot keep readiness from answering that it is. Readiness also asks on a
connection no command holds: a keyed command keeps one of ``pool`` (its idempotency
record) for as long as it runs, and a busy replica is still a ready one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from psycopg_pool import ConnectionPool

from application.idempotency import IdempotencyStore
from application.service import WorkflowService
from application.settings import Settings
from domain.errors import InvalidInput, Problem
from interface.http.observability import Metrics

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    service: WorkflowService
    pool: ConnectionPool
    idempotency: IdempotencyStore
    metrics: Metrics
    ready_pool: ConnectionPool | None = None  # readiness's own connection; ``pool`` if None
    queries: Any = None  # application.queries, once the read models exist
    limiter: CapacityLimiter = field(init=False)
    read_limiter: CapacityLimiter = field(init=False)
    operations_limiter: CapacityLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = CapacityLimiter(self.settings.http_command_threads)
        self.read_limiter = CapacityLimiter(max(2, self.settings.database_pool_size))
        self.operations_limiter = CapacityLimiter(2)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)

    async def operate(self, fn: Callable[..., T], *args: Any) -> T:
        """Readiness and metrics, on threads no command or list can hold."""
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self.operations_limiter)

    async def read(self, fn: Callable[..., T], *args: Any, wait_for: int | None = None, **kwargs: Any) -> T:
        """A read-model query for a list endpoint, on a worker thread: every list checks
        ``wait_for`` here, so a position the log has not reached is a 422 at once instead of
        a worker thread waiting out the bound for a position no command answered with."""
        def query() -> T:
            self.check_log_position(wait_for)
            return fn(*args, wait_for=wait_for, **kwargs)

        return await anyio.to_thread.run_sync(query, limiter=self.read_limiter)

    def check_log_position(self, wait_for: int | None) -> None:
        if wait_for is None:
            return
        head = self.service.recorder.max_notification_id() or 0
        if wait_for > head:
            raise InvalidInput("that log position does not exist yet",
                               [Problem("query:wait_for", f"the event log is at {head}")])

    def database_answers(self) -> bool:
        with (self.ready_pool or self.pool).connection(timeout=2) as connection:
            connection.execute("SELECT 1")
        return True
