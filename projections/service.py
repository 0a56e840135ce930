"""Projections inside the service: one runner thread per read model.

``start_projections`` is what the HTTP lifespan calls; every replica starts all runners,
and the advisory locks make exactly one of each active across replicas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from projections.follow import ensure_tables
from projections.log import EventLog
from projections.registry import selected
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)


@dataclass
class ProjectionsHandle:
    runners: list[ProjectionRunner]

    def stop(self, timeout: float = 10.0) -> None:
        for runner in self.runners:
            runner._stop.set()
        for runner in self.runners:
            runner.stop(timeout)

    def runner(self, name: str) -> ProjectionRunner:
        return next(runner for runner in self.runners if runner.name == name)


def start_projections(
    app: Any, settings: Any = None, *, names: list[str] | None = None, batch_size: int = 1000,
    idle_wait: float = 0.5, standby_wait: float = 1.0, batch_interval: float | None = None,
) -> ProjectionsHandle:
    """Starts a runner thread per projection (all by default) following ``app``'s log."""
    event_log = EventLog.of(app)
    projections = selected(names)
    if batch_interval is None:
        batch_interval = settings.projections_batch_interval_ms / 1000 if settings is not None else 0.0
    try:  # so that queries find the tables from the start; runners create them otherwise
        with event_log.connect("skillbase-projections-setup") as conn:
            for projection in projections:
                ensure_tables(conn, event_log, projection)
    except Exception as error:  # noqa: BLE001 - the database may be down: runners retry
        log.warning("projections: could not create the read-model tables yet: %s", error)
    runners = [
        ProjectionRunner(projection, event_log, batch_size=batch_size, idle_wait=idle_wait,
                         standby_wait=standby_wait, batch_interval=batch_interval).start()
        for projection in projections
    ]
    log.info("projections started: %s", ", ".join(runner.name for runner in runners))
    return ProjectionsHandle(runners)
