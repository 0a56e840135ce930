"""The whole workflow application: every command, composed in one class."""

from __future__ import annotations

from application.catalog import CatalogCommands
from application.file_commands import FileCommands
from application.message_commands import MessageCommands
from application.timer_commands import TimerCommands


class WorkflowService(TimerCommands, MessageCommands, FileCommands, CatalogCommands):
    """Instances, tasks, files, catalog facts, definition administration, emails, timers
    and inbound messages."""

    # eventsourcing names the tables after the application (``skillbaseworkflow_events``)
    # and would otherwise take the class name: pinned, so a rename never moves the store.
    name = "SkillbaseWorkflow"
