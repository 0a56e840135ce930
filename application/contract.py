"""The public contract: every stored domain event as one CloudEvents 1.0 message.

``type`` is the event class's ``EVENT_TYPE`` (one of the twelve), ``id`` is stable per
stored event (uuid5 of the aggregate id and version, so a redelivery has the same id),
``subject`` is ``<entity>/<id>``, ``data`` is ``{"state": <entity after the change>,
"change": <the stored fact>}``. Internal details (the engine state, the learner's email)
never leave the service. Domain events stay private; this module is the mapping (ADR 0001).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import msgspec

from domain.definition import WorkflowDefinition
from domain.deployment import WorkflowDeployment
from domain.event_types import entity_of
from domain.instance import PASS, WorkflowInstance
from domain.task import WorkflowTask

SOURCE = "/skillbase/workflow"
_EVENT_ID_NAMESPACE = UUID("1b4e28ba-2fa1-51d2-883f-0016d3cca427")
_PRIVATE_FIELDS = {"engine_state", "originator_id", "originator_version", "timestamp", "originator_topic",
                   "user_email", "spec_state", "files"}


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True):
    specversion: str = "1.0"
    type: str
    source: str = SOURCE
    id: str
    time: str
    subject: str
    datacontenttype: str = "application/json"
    sequence: int | None = None
    data: dict[str, Any]


_encoder = msgspec.json.Encoder()


def encode(event: CloudEvent) -> bytes:
    return _encoder.encode(event)


def event_id(originator_id: UUID, originator_version: int) -> str:
    return str(uuid5(_EVENT_ID_NAMESPACE, f"{originator_id}/{originator_version}"))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """``value`` with UUIDs and datetimes as strings, containers as dicts and lists."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def change_of(domain_event: Any) -> dict[str, Any]:
    fields = {k: v for k, v in domain_event.__dict__.items() if k not in _PRIVATE_FIELDS}
    if type(domain_event).__name__ == "VersionAdded":
        fields["files"] = sorted(domain_event.files)
    if isinstance(fields.get("messages"), list):
        fields["messages"] = [message_summary(message) for message in fields["messages"]]
    if isinstance(fields.get("error"), str):
        fields["error"] = error_kind(fields["error"])
    return {"fact": type(domain_event).__name__, **_plain(fields)}


def message_summary(message: Any) -> dict[str, Any]:
    """What a thrown message is, without what it carries: its name, and an email's template.
    A payload is an expression over process data, and an email's ``to`` may be a literal
    address (a third person's): neither leaves the service."""
    if not isinstance(message, dict):
        return {"name": None}
    summary = {"name": message.get("name")}
    payload = message.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("template"), str):
        summary["template"] = payload["template"]
    return summary


_ERROR_KIND = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,99})(?::|$)")


def error_kind(text: str) -> str:
    """The kind of an engine failure (``ValueError``, ``TimeoutError``), never its message:
    Python's messages quote values (a script's literals, process data). The whole text
    stays in the store, for admins (``GET /instances/{id}``, the audit)."""
    found = _ERROR_KIND.match(text)
    return found.group(1) if found else "WorkflowError"


def state_of(aggregate: Any) -> dict[str, Any]:
    base = {"id": str(aggregate.id), "version": aggregate.version,
            "created_on": aggregate.created_on.isoformat(), "modified_on": aggregate.modified_on.isoformat()}
    if isinstance(aggregate, WorkflowInstance):
        state = {
            "user_id": aggregate.user_id, "credential_id": aggregate.credential_id,
            "skill_id": aggregate.skill_id, "definition_id": aggregate.definition_id,
            "definition_version": aggregate.definition_version, "status": aggregate.status,
            "result": aggregate.result, "ended_at": aggregate.ended_at,
            "open_tasks": aggregate.open_tasks, "files": list(aggregate.files.values()),
            "evidence": aggregate.evidence, "error": error_kind(aggregate.error) if aggregate.error else None,
            "cancel_reason": aggregate.cancel_reason, "timers": aggregate.timers,
        }
    elif isinstance(aggregate, WorkflowTask):
        state = {
            name: getattr(aggregate, name)
            for name in ("instance_id", "learner_id", "credential_id", "skill_id", "element_id", "name",
                         "kind", "candidate_group", "assignee", "status", "form", "due_at",
                         "completed_by", "completed_at", "data", "evidence", "cancel_reason")
        }
    elif isinstance(aggregate, WorkflowDefinition):
        state = {
            "credential_id": aggregate.credential_id, "skill_id": aggregate.skill_id,
            "name": aggregate.name, "description": aggregate.description,
            "catalog_version": aggregate.catalog_version, "deleted": aggregate.deleted,
            "versions": [
                {"number": v.number, "process_id": v.process_id, "sha256": v.sha256,
                 "added_by": v.added_by, "added_at": v.added_at, "template": v.template}
                for v in aggregate.versions.values()
            ],
        }
    elif isinstance(aggregate, WorkflowDeployment):
        state = {
            "skill_id": aggregate.skill_id, "name": aggregate.name, "description": aggregate.description,
            "status": aggregate.status, "catalog_version": aggregate.catalog_version,
            "deleted": aggregate.deleted, "pins": aggregate.pins,
        }
    else:
        state = {}
    return {**base, **_plain(state)}


def achievement_of(instance: WorkflowInstance) -> dict[str, Any]:
    """What the achievement side needs, shaped as an Open Badges 3.0 AchievementSubject."""
    return {
        "type": ["AchievementSubject"],
        "id": f"urn:skillbase:user:{instance.user_id}",
        "user_id": instance.user_id,
        "credential_id": instance.credential_id,
        "skill_id": instance.skill_id,
        "instance_id": str(instance.id),
        "completed_at": _plain(instance.ended_at),
        "achievement": {"type": ["Achievement"], "id": f"urn:skillbase:credential:{instance.credential_id}"},
        "result": [{"type": ["Result"], "status": "Completed", "value": instance.result}],
        "evidence": [
            {
                "type": ["Evidence"],
                "id": f"urn:skillbase:file:{file['id']}",
                "name": file.get("name"),
                "genre": file.get("media_type"),
                "media_type": file.get("media_type"),
                "size": file.get("size"),
                "sha256": file.get("sha256"),
            }
            for file in instance.evidence
        ],
    }


def to_cloudevent(domain_event: Any, aggregate_after: Any, sequence: int | None = None) -> CloudEvent:
    event_type = type(domain_event).EVENT_TYPE
    data: dict[str, Any] = {"state": state_of(aggregate_after), "change": change_of(domain_event)}
    if isinstance(aggregate_after, WorkflowInstance) and type(domain_event).__name__ == "Completed" \
            and aggregate_after.result == PASS:
        data["achievement"] = achievement_of(aggregate_after)
    return CloudEvent(
        type=event_type,
        id=event_id(domain_event.originator_id, domain_event.originator_version),
        time=domain_event.timestamp.isoformat(),
        subject=f"{entity_of(event_type)}/{domain_event.originator_id}",
        sequence=sequence,
        data=data,
    )


class EntityStates:
    """The state of each entity right after each of its events, for readers of the log.

    Readers see events in log order, so the next event of a cached entity usually follows
    its cached version and is applied in place; otherwise the entity is loaded at that
    version from the store.
    """

    def __init__(self, repository: Any, capacity: int = 10_000) -> None:
        self._repository = repository
        self._capacity = capacity
        self._cache: OrderedDict[UUID, Any] = OrderedDict()

    def after(self, domain_event: Any) -> Any:
        key = domain_event.originator_id
        version = domain_event.originator_version
        cached = self._cache.pop(key, None)
        if cached is not None and cached.version == version - 1:
            aggregate = domain_event.mutate(cached)
        elif version == 1:
            aggregate = domain_event.mutate(None)
        else:
            aggregate = self._repository.get(key, version=version)
        self._cache[key] = aggregate
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return aggregate
