"""The wire: every request and response body as a msgspec Struct.

New fields get defaults, so old clients keep working. Times are RFC 3339 UTC strings,
ids are UUIDs except catalog ids (credential, skill, user), which are the catalog's strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta

# No NUL character: PostgreSQL text cannot hold one, so a read model could not store it.
NO_NUL = r"^[^\x00]*$"
CatalogId = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL, description="an id from the catalog service",
                                examples=["9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"])]
Reason = Annotated[str, Meta(min_length=1, max_length=2000, pattern=NO_NUL, examples=["I picked the wrong credential"])]
UserId = Annotated[str, Meta(min_length=1, max_length=255, pattern=NO_NUL, examples=["assessor-ada"])]
Cursor = Annotated[str | None, Meta(description="pass as `cursor` to get the next page; null on the last page")]


# -- requests ------------------------------------------------------------------------------


class StartInstance(msgspec.Struct, forbid_unknown_fields=True):
    """Start working towards a credential."""

    credential_id: CatalogId


class CancelInstance(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class CompleteTask(msgspec.Struct, forbid_unknown_fields=True):
    """The task's form data, validated against the task's JSON Schema (``form``)."""

    data: Annotated[dict[str, Any], Meta(examples=[{"score": 85, "feedback": "Even bead, no porosity."}])] = {}


class ReassignTask(msgspec.Struct, forbid_unknown_fields=True):
    assignee: UserId


class DeliverMessage(msgspec.Struct, forbid_unknown_fields=True):
    """A named message for an instance that waits for it (a receive task or message catch
    event), found by ``instance_id`` or by ``correlation_keys``."""

    name: Annotated[str, Meta(min_length=1, max_length=200, examples=["payment_received"])]
    message_id: Annotated[str, Meta(min_length=1, max_length=200, examples=["pay-2024-0042"],
                                    description="the sender's id: the same id again has no further effect")]
    payload: Annotated[dict[str, Any], Meta(examples=[{"amount": 120}])] = {}
    instance_id: UUID | None = None
    correlation_keys: Annotated[dict[str, Any] | None, Meta(
        description="admins: deliver to the instance whose wait matches these keys",
        examples=[{"order": "A-1"}])] = None


class UploadDefinitionVersion(msgspec.Struct, forbid_unknown_fields=True):
    """A BPMN bundle: file name -> file text (one .bpmn, optional .dmn, form .json schemas)."""

    files: Annotated[dict[str, str], Meta(min_length=1, examples=[{
        "credential-assessment.bpmn": "<?xml version=\"1.0\"?><bpmn:definitions ...>",
        "submit-evidence.schema.json": "{\"type\": \"object\"}",
    }])]


# -- entities ------------------------------------------------------------------------------


class FileRef(msgspec.Struct):
    """A file attached to an instance (bytes on the file store, facts in the log)."""

    id: str
    name: str
    media_type: str
    size: int
    sha256: str
    extension: str = ""
    uploaded_by: str = ""


class Task(msgspec.Struct):
    id: UUID
    instance_id: UUID
    learner_id: str
    credential_id: str
    skill_id: str
    element_id: str
    name: str
    kind: Annotated[str, Meta(description="`user` (a form to fill in) or `manual` (work done outside, marked done)")]
    candidate_group: Annotated[str | None, Meta(description="the group offered the task; null for the learner's own tasks")]
    assignee: str | None
    status: Annotated[str, Meta(examples=["open", "completed", "cancelled"])]
    due_at: datetime | None
    created_at: datetime
    modified_at: datetime
    completed_by: str | None
    completed_at: datetime | None
    version: Annotated[int, Meta(description="the aggregate version; also the ETag")]


class TaskDetail(Task):
    documentation: str = ""
    form: Annotated[dict[str, Any] | None, Meta(description="the JSON Schema the completion data must satisfy")] = None
    data: dict[str, Any] = {}
    cancel_reason: str | None = None


class Instance(msgspec.Struct):
    id: UUID
    user_id: str
    credential_id: str
    skill_id: str
    definition_id: UUID
    definition_version: int
    status: Annotated[str, Meta(examples=["running", "completed", "cancelled", "failed", "deleted"])]
    result: Annotated[str | None, Meta(examples=["pass", "fail"])]
    started_at: datetime
    modified_at: datetime
    ended_at: datetime | None
    open_task_ids: list[UUID]
    files: list[FileRef]
    cancel_reason: str | None
    error: str | None
    version: int


class HistoryEntry(msgspec.Struct):
    version: int
    at: datetime
    fact: Annotated[str, Meta(examples=["Started", "Advanced", "FileAttached", "Completed"])]
    by: str | None = None
    summary: str = ""


class Incident(msgspec.Struct):
    """Something the service could not do on its own (an email SMTP refused for good, or
    that failed for a day): an admin retries it (``POST …/incidents/{id}/retry``)."""

    id: str
    kind: Annotated[str, Meta(examples=["email"])]
    reason: str
    status: Annotated[str, Meta(examples=["open", "retried"])]
    attempts: int
    raised_at: datetime | None = None
    retried_by: str | None = None


class InstanceDetail(Instance):
    open_tasks: list[Task] = []
    history: list[HistoryEntry] = []
    evidence: list[FileRef] = []
    incidents: list[Incident] = []


class DefinitionVersionSummary(msgspec.Struct):
    number: int
    process_id: str
    sha256: str
    added_by: str
    added_at: datetime
    template: str | None
    files: list[str] = []


class DefinitionVersion(DefinitionVersionSummary):
    credential_id: str = ""
    contents: dict[str, str] = {}


class Definition(msgspec.Struct):
    id: UUID
    credential_id: str
    skill_id: str
    name: str
    description: str
    deleted: bool
    latest_version: int
    versions: list[DefinitionVersionSummary]
    version: int


class Pin(msgspec.Struct):
    credential_id: str
    definition_id: UUID
    version: int


class Deployment(msgspec.Struct):
    id: UUID
    skill_id: str
    name: str
    description: str
    status: Annotated[str, Meta(examples=["active", "retired", "pending"])]
    deleted: bool
    pins: list[Pin]
    version: int


class AuditEntry(msgspec.Struct):
    """One stored event, as the CloudEvent the service publishes for it."""

    version: int
    id: str
    type: str
    time: str
    subject: str
    change: dict[str, Any]


class AuditHistory(msgspec.Struct):
    entity: str
    id: UUID
    items: list[AuditEntry]
    next_cursor: Cursor = None


class InstanceSummary(msgspec.Struct):
    """An instance as the instance list shows it."""

    id: UUID
    user_id: str
    credential_id: str
    skill_id: str
    definition_id: UUID
    definition_version: int
    status: str
    result: str | None
    started_at: datetime
    modified_at: datetime
    ended_at: datetime | None
    version: int


class Dashboard(msgspec.Struct):
    scope: Annotated[str, Meta(examples=["credential", "skill"])]
    scope_id: str
    instances_by_status: dict[str, int]
    passed: int
    failed: int
    pass_rate: float | None
    median_seconds_to_complete: float | None
    p90_seconds_to_complete: float | None
    open_tasks_by_group: dict[str, int]
    overdue_tasks: int
    position: Annotated[int, Meta(description="the event log position the figures include")]


# -- pages ---------------------------------------------------------------------------------


class TaskPage(msgspec.Struct):
    items: list[Task]
    next_cursor: Cursor = None


class InstancePage(msgspec.Struct):
    items: list[InstanceSummary]
    next_cursor: Cursor = None


class DefinitionPage(msgspec.Struct):
    items: list[Definition]
    next_cursor: Cursor = None


class DeploymentPage(msgspec.Struct):
    items: list[Deployment]
    next_cursor: Cursor = None


# -- operations ----------------------------------------------------------------------------


class Health(msgspec.Struct):
    status: Annotated[str, Meta(examples=["ok"])]


class Readiness(msgspec.Struct):
    status: Annotated[str, Meta(examples=["ready"])]
    database: Annotated[str, Meta(examples=["ok"])]


class MessageReceipt(msgspec.Struct):
    message_id: str
    status: Annotated[str, Meta(description="`delivered`: an instance took it now; `kept`: nobody waits for it "
                                "yet, it is kept and delivered when one does; `duplicate`: this id came before",
                                examples=["delivered", "kept", "duplicate"])]
