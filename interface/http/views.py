"""Aggregates -> wire Structs. What a client sees of each entity, nothing more
(no engine state, no learner email)."""

from __future__ import annotations

from typing import Any

from application.contract import change_of, event_id
from domain.definition import WorkflowDefinition
from domain.deployment import WorkflowDeployment
from domain.instance import WorkflowInstance
from domain.task import WorkflowTask
from interface.http import schemas

_BY_FIELDS = ("by", "added_by")


def etag(aggregate: Any) -> str:
    return f'"{aggregate.version}"'


def task(t: WorkflowTask) -> schemas.Task:
    return schemas.Task(
        id=t.id, instance_id=t.instance_id, learner_id=t.learner_id, credential_id=t.credential_id,
        skill_id=t.skill_id, element_id=t.element_id, name=t.name, kind=t.kind,
        candidate_group=t.candidate_group, assignee=t.assignee, status=t.status, due_at=t.due_at,
        created_at=t.created_on, modified_at=t.modified_on, completed_by=t.completed_by,
        completed_at=t.completed_at, version=t.version,
    )


def task_detail(t: WorkflowTask, form: dict[str, Any] | None) -> schemas.TaskDetail:
    base = task(t)
    return schemas.TaskDetail(
        **{name: getattr(base, name) for name in base.__struct_fields__},
        documentation=t.documentation or "", form=form, data=t.data, cancel_reason=t.cancel_reason,
    )


def file_ref(f: dict[str, Any]) -> schemas.FileRef:
    return schemas.FileRef(
        id=str(f["id"]), name=str(f.get("name", "")), media_type=str(f.get("media_type", "")),
        size=int(f.get("size", 0)), sha256=str(f.get("sha256", "")), extension=str(f.get("extension", "")),
        uploaded_by=str(f.get("uploaded_by", "")),
    )


def instance(i: WorkflowInstance) -> schemas.Instance:
    return schemas.Instance(
        id=i.id, user_id=i.user_id, credential_id=i.credential_id, skill_id=i.skill_id,
        definition_id=i.definition_id, definition_version=i.definition_version, status=i.status,
        result=i.result, started_at=i.created_on, modified_at=i.modified_on, ended_at=i.ended_at,
        open_task_ids=list(i.open_tasks), files=[file_ref(f) for f in i.files.values()],
        cancel_reason=i.cancel_reason, error=i.error, version=i.version,
    )


def instance_detail(
    i: WorkflowInstance, open_tasks: list[WorkflowTask], events: list[Any]
) -> schemas.InstanceDetail:
    base = instance(i)
    return schemas.InstanceDetail(
        **{name: getattr(base, name) for name in base.__struct_fields__},
        open_tasks=[task(t) for t in open_tasks],
        history=[history_entry(e) for e in events],
        evidence=[file_ref(f) for f in i.evidence],
        incidents=[schemas.Incident(id=n["id"], kind=n["kind"], reason=n["reason"], status=n["status"],
                                    attempts=n["attempts"], raised_at=n.get("raised_at"),
                                    retried_by=n.get("retried_by"))
                   for n in i.incidents.values()],
    )


def history_entry(event: Any) -> schemas.HistoryEntry:
    fact = type(event).__name__
    by = next((getattr(event, name) for name in _BY_FIELDS if hasattr(event, name)), None)
    return schemas.HistoryEntry(
        version=event.originator_version, at=event.timestamp, fact=fact, by=by, summary=_summary(event, fact)
    )


def _summary(event: Any, fact: str) -> str:
    if fact == "Started":
        return f"started on definition version {event.definition_version}"
    if fact == "Advanced":
        return f"{event.cause}: {len(event.opened_tasks)} task(s) opened, {len(event.closed_tasks)} closed"
    if fact == "Completed":
        return f"ended: {event.result}"
    if fact == "Cancelled":
        return f"cancelled: {event.reason}"
    if fact == "Failed":
        return f"failed at {event.element_id}: {event.error}"
    if fact == "FileAttached":
        return f"file {event.file.get('name')} attached"
    return ""


def version_summary(v: Any) -> schemas.DefinitionVersionSummary:
    return schemas.DefinitionVersionSummary(
        number=v.number, process_id=v.process_id, sha256=v.sha256, added_by=v.added_by,
        added_at=v.added_at, template=v.template, files=sorted(v.files),
    )


def definition_version(d: WorkflowDefinition, v: Any) -> schemas.DefinitionVersion:
    base = version_summary(v)
    return schemas.DefinitionVersion(
        **{name: getattr(base, name) for name in base.__struct_fields__},
        credential_id=d.credential_id, contents=dict(v.files),
    )


def definition(d: WorkflowDefinition) -> schemas.Definition:
    return schemas.Definition(
        id=d.id, credential_id=d.credential_id, skill_id=d.skill_id, name=d.name,
        description=d.description, deleted=d.deleted, latest_version=d.latest_version,
        versions=[version_summary(v) for _, v in sorted(d.versions.items())], version=d.version,
    )


def deployment(d: WorkflowDeployment) -> schemas.Deployment:
    return schemas.Deployment(
        id=d.id, skill_id=d.skill_id, name=d.name, description=d.description, status=d.status,
        deleted=d.deleted, version=d.version,
        pins=[schemas.Pin(credential_id=c, definition_id=p["definition_id"], version=p["version"])
              for c, p in sorted(d.pins.items())],
    )


def audit_entry(event: Any, entity: str) -> schemas.AuditEntry:
    return schemas.AuditEntry(
        version=event.originator_version,
        id=event_id(event.originator_id, event.originator_version),
        type=type(event).EVENT_TYPE,
        time=event.timestamp.isoformat(),
        subject=f"{entity}/{event.originator_id}",
        change=change_of(event),
    )
