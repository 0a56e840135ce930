"""Wires the application from settings: the one place that knows every dependency."""

from __future__ import annotations

from datetime import timedelta

from application.app import Clock, utc_now
from application.database import Database, open_database
from application.engine.runner import Engine
from application.files.store import PosixFileStore
from application.service import WorkflowService
from application.settings import Settings


def bootstrap(
    settings: Settings, *, database: Database | None = None, clock: Clock = utc_now
) -> WorkflowService:
    if settings.files_max_per_instance < 1:
        raise ValueError(f"SKILLBASE_WORKFLOW_FILES_MAX_PER_INSTANCE must be at least 1, got {settings.files_max_per_instance}")
    database = database or open_database(settings)
    service = WorkflowService(
        env=database.eventsourcing_env(settings),
        engine=Engine(),
        clock=clock,
        bundle_max_bytes=settings.bundle_max_bytes,
    )
    service.message_keep = timedelta(seconds=settings.message_keep_seconds)
    service.files_max_per_instance = settings.files_max_per_instance
    return service


def open_file_store(settings: Settings) -> PosixFileStore:
    """The local directory by default (created on first use); in production the configured
    root, a JuiceFS mount, which is never created here: a missing mount is an outage."""
    if not settings.files_root:
        settings.files_directory.mkdir(parents=True, exist_ok=True)
    return PosixFileStore(
        settings.files_directory,
        settings.files_max_bytes,
        settings.files_allowed_types,
        require_mount=bool(settings.files_root) and settings.files_require_mount,
    )
