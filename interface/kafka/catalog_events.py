"""The six ``SKILLBASE_CATALOG_*`` events we consume, as typed msgspec Structs.

Each event's ``data`` is a Struct tagged with its CloudEvents ``type``; the envelope's
``type`` picks the one reusable decoder for that Struct. Fields the catalog adds later are
ignored; fields we add later get defaults. Ids are UUIDs, versions positive 64-bit ints.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec

from interface.kafka.cloudevents import (
    CloudEvent,
    Headers,
    UndecodableMessage,
    decode_message,
    is_json,
)

Version = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


class _CatalogData(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: UUID
    version: Version


class WorkflowRef(msgspec.Struct, frozen=True, kw_only=True):
    """How the credential is earned: a built-in template name (a BPMN bundle later)."""

    template: Annotated[str, msgspec.Meta(min_length=1)]


class SkillCreated(_CatalogData, tag="SKILLBASE_CATALOG_SKILL_CREATED"):
    name: Name
    description: str = ""
    status: str = "active"


class SkillUpdated(_CatalogData, tag="SKILLBASE_CATALOG_SKILL_UPDATED"):
    name: Name
    description: str = ""
    status: str = "active"


class SkillDeleted(_CatalogData, tag="SKILLBASE_CATALOG_SKILL_DELETED"):
    pass


class CredentialCreated(_CatalogData, tag="SKILLBASE_CATALOG_CREDENTIAL_CREATED"):
    skill_id: UUID
    name: Name
    description: str = ""
    workflow: WorkflowRef | None = None


class CredentialUpdated(_CatalogData, tag="SKILLBASE_CATALOG_CREDENTIAL_UPDATED"):
    skill_id: UUID
    name: Name
    description: str = ""
    workflow: WorkflowRef | None = None


class CredentialDeleted(_CatalogData, tag="SKILLBASE_CATALOG_CREDENTIAL_DELETED"):
    skill_id: UUID | None = None


CatalogData = (
    SkillCreated
    | SkillUpdated
    | SkillDeleted
    | CredentialCreated
    | CredentialUpdated
    | CredentialDeleted
)
_TYPES: tuple[type[_CatalogData], ...] = (
    SkillCreated,
    SkillUpdated,
    SkillDeleted,
    CredentialCreated,
    CredentialUpdated,
    CredentialDeleted,
)
CATALOG_EVENT_TYPES: tuple[str, ...] = tuple(t.__struct_config__.tag for t in _TYPES)
_DECODERS = {t.__struct_config__.tag: msgspec.json.Decoder(t) for t in _TYPES}


class CatalogEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A catalog CloudEvent: the envelope (``data`` still raw) and its typed data."""

    envelope: CloudEvent
    data: CatalogData

    @property
    def event_id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type


def decode_catalog_event(headers: Headers, value: bytes | None) -> CatalogEvent:
    envelope = decode_message(headers, value)
    decoder = _DECODERS.get(envelope.type)
    if decoder is None:
        raise UndecodableMessage(f"unknown type `{envelope.type}`")
    if not is_json(envelope.datacontenttype):
        raise UndecodableMessage(
            f"unsupported datacontenttype `{envelope.datacontenttype}` for `{envelope.type}`"
        )
    if envelope.data is None:
        raise UndecodableMessage(f"missing data for `{envelope.type}`")
    try:
        data = decoder.decode(envelope.data)
    except msgspec.ValidationError as error:
        raise UndecodableMessage(f"invalid data: {_under_data(str(error))}") from None
    except msgspec.DecodeError as error:
        raise UndecodableMessage(f"bad JSON in data: {error}") from None
    return CatalogEvent(envelope=envelope, data=data)


def _under_data(message: str) -> str:
    """Moves a msgspec error path from the data's root to ``$.data``."""
    if " - at `$" in message:
        return message.replace(" - at `$", " - at `$.data", 1)
    return f"{message} - at `$.data`"
