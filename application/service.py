"""The whole workflow application: every command, composed in one class."""

from __future__ import annotations

from application.catalog import CatalogCommands


class WorkflowService(CatalogCommands):
    """Instances, tasks, catalog facts and definition administration."""
