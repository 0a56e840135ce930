"""A decoded catalog event -> the catalog command it means. No rule lives here."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Tracking

from interface.kafka.catalog_events import (
    CatalogEvent,
    CredentialCreated,
    CredentialDeleted,
    CredentialUpdated,
    SkillCreated,
    SkillDeleted,
    SkillUpdated,
)


def apply_catalog_event(app: Any, event: CatalogEvent, tracking: Tracking | None = None) -> bool:
    """Applies ``event`` (saving ``tracking`` with its effect); True when something changed."""
    data = event.data
    if isinstance(data, SkillCreated | SkillUpdated):
        return app.upsert_skill(
            skill_id=str(data.id), version=data.version, name=data.name,
            description=data.description, status=data.status, tracking=tracking,
        )
    if isinstance(data, SkillDeleted):
        return app.delete_skill(skill_id=str(data.id), version=data.version, tracking=tracking)
    if isinstance(data, CredentialCreated | CredentialUpdated):
        return app.upsert_credential(
            credential_id=str(data.id), version=data.version, skill_id=str(data.skill_id),
            name=data.name, description=data.description,
            template=data.workflow.template if data.workflow else None, tracking=tracking,
        )
    if isinstance(data, CredentialDeleted):
        return app.delete_credential(
            credential_id=str(data.id), version=data.version,
            skill_id=str(data.skill_id) if data.skill_id else None, tracking=tracking,
        )
    raise TypeError(f"no catalog command for {type(data).__name__}")  # pragma: no cover
