"""The whole workflow application: every command, composed in one class."""

from __future__ import annotations

from application.catalog import CatalogCommands
from application.file_commands import FileCommands


class WorkflowService(FileCommands, CatalogCommands):
    """Instances, tasks, files, catalog facts and definition administration."""
