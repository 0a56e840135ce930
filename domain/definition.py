"""WorkflowDefinition: the versioned BPMN bundle of one catalog credential.

A version is immutable once added: running instances keep the version they started on.
Catalog facts (name, skill) arrive with a per-entity ``catalog_version``; stale ones are
ignored. A deleted definition starts nothing new.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NotFound
from domain.event_types import Change, Entity, aggregate_topic, event_type, stored_topic
from domain.ids import definition_id


def _topic(fact: str) -> str:
    return stored_topic("Definition", fact)


class WorkflowDefinition(Aggregate):
    TOPIC = aggregate_topic("Definition")

    class Event(Aggregate.Event):
        TOPIC = _topic("Event")
        EVENT_TYPE = event_type(Entity.DEFINITION, Change.UPDATED)

    class Created(Event, Aggregate.Created):
        TOPIC = _topic("Created")
        EVENT_TYPE = event_type(Entity.DEFINITION, Change.CREATED)
        credential_id: str
        skill_id: str
        name: str
        description: str
        catalog_version: int

    class CatalogUpdated(Event):
        TOPIC = _topic("CatalogUpdated")
        EVENT_TYPE = event_type(Entity.DEFINITION, Change.UPDATED)
        skill_id: str
        name: str
        description: str
        catalog_version: int

    class VersionAdded(Event):
        """A validated bundle: its files, its process id and the engine's spec of it."""

        TOPIC = _topic("VersionAdded")
        EVENT_TYPE = event_type(Entity.DEFINITION, Change.UPDATED)
        number: int
        process_id: str
        files: dict[str, str]
        sha256: str
        spec_state: dict[str, Any]
        engine_format: str
        added_by: str
        template: str | None

    class Deleted(Event):
        TOPIC = _topic("Deleted")
        EVENT_TYPE = event_type(Entity.DEFINITION, Change.DELETED)
        catalog_version: int

    @staticmethod
    def create_id(credential_id: str, **_: Any) -> UUID:
        return definition_id(credential_id)

    @event(Created)
    def __init__(
        self, *, credential_id: str, skill_id: str, name: str, description: str, catalog_version: int
    ) -> None:
        self.credential_id = credential_id
        self.skill_id = skill_id
        self.name = name
        self.description = description
        self.catalog_version = catalog_version
        self.versions: dict[int, DefinitionVersion] = {}
        self.deleted = False

    # -- queries -----------------------------------------------------------------------

    @property
    def latest_version(self) -> int:
        return max(self.versions, default=0)

    def get_version(self, number: int) -> DefinitionVersion:
        try:
            return self.versions[number]
        except KeyError:
            raise NotFound(f"definition {self.id} has no version {number}") from None

    def find_version_by_sha256(self, sha256: str) -> DefinitionVersion | None:
        return next((v for v in self.versions.values() if v.sha256 == sha256), None)

    def is_stale(self, catalog_version: int) -> bool:
        return catalog_version <= self.catalog_version

    # -- commands ----------------------------------------------------------------------

    def update_from_catalog(
        self, *, skill_id: str, name: str, description: str, catalog_version: int
    ) -> bool:
        """Applies a catalog update; returns False when it is stale or the entity is gone."""
        if self.deleted or self.is_stale(catalog_version):
            return False
        self._catalog_updated(
            skill_id=skill_id, name=name, description=description, catalog_version=catalog_version
        )
        return True

    def add_version(
        self,
        *,
        process_id: str,
        files: dict[str, str],
        sha256: str,
        spec_state: dict[str, Any],
        engine_format: str,
        added_by: str,
        template: str | None = None,
    ) -> int:
        if self.deleted:
            raise Conflict("the definition is deleted")
        number = self.latest_version + 1
        self._version_added(
            number=number,
            process_id=process_id,
            files=files,
            sha256=sha256,
            spec_state=spec_state,
            engine_format=engine_format,
            added_by=added_by,
            template=template,
        )
        return number

    def delete(self, *, catalog_version: int) -> bool:
        if self.deleted or self.is_stale(catalog_version):
            return False
        self._deleted(catalog_version=catalog_version)
        return True

    # -- mutators ----------------------------------------------------------------------

    @event(CatalogUpdated)
    def _catalog_updated(self, skill_id: str, name: str, description: str, catalog_version: int) -> None:
        self.skill_id = skill_id
        self.name = name
        self.description = description
        self.catalog_version = catalog_version

    @event(VersionAdded)
    def _version_added(
        self,
        number: int,
        process_id: str,
        files: dict[str, str],
        sha256: str,
        spec_state: dict[str, Any],
        engine_format: str,
        added_by: str,
        template: str | None,
        timestamp: datetime | None = None,  # the event's own time (see WorkflowTask._completed)
    ) -> None:
        self.versions[number] = DefinitionVersion(
            number=number,
            process_id=process_id,
            files=files,
            sha256=sha256,
            spec_state=spec_state,
            engine_format=engine_format,
            added_by=added_by,
            added_at=timestamp,
            template=template,
        )

    @event(Deleted)
    def _deleted(self, catalog_version: int) -> None:
        self.deleted = True
        self.catalog_version = catalog_version


class DefinitionVersion:
    """One immutable version of a definition's bundle."""

    __slots__ = (
        "number",
        "process_id",
        "files",
        "sha256",
        "spec_state",
        "engine_format",
        "added_by",
        "added_at",
        "template",
    )

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, values[name])
