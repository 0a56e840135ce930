"""WorkflowDeployment: one catalog skill's set of live definitions.

It pins each credential of the skill to one definition version. A credential can be
started only when the deployment is active and pins it. A credential may arrive before
its skill: the deployment then exists as ``pending`` with the pin, and becomes active
when the skill arrives (ADR 0004).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NotAllowed, NotFound
from domain.event_types import Change, Entity, aggregate_topic, event_type, stored_topic
from domain.identity import Actor
from domain.ids import deployment_id

PENDING, ACTIVE, RETIRED = "pending", "active", "retired"


def _topic(fact: str) -> str:
    return stored_topic("Deployment", fact)


class WorkflowDeployment(Aggregate):
    TOPIC = aggregate_topic("Deployment")

    class Event(Aggregate.Event):
        TOPIC = _topic("Event")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.UPDATED)

    class Created(Event, Aggregate.Created):
        TOPIC = _topic("Created")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.CREATED)
        skill_id: str
        name: str
        description: str
        status: str
        catalog_version: int

    class CatalogUpdated(Event):
        TOPIC = _topic("CatalogUpdated")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.UPDATED)
        name: str
        description: str
        status: str
        catalog_version: int

    class DefinitionPinned(Event):
        TOPIC = _topic("DefinitionPinned")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.UPDATED)
        credential_id: str
        definition_id: UUID
        version: int
        by: str

    class DefinitionUnpinned(Event):
        TOPIC = _topic("DefinitionUnpinned")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.UPDATED)
        credential_id: str
        by: str

    class StatusChanged(Event):
        TOPIC = _topic("StatusChanged")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.UPDATED)
        status: str
        by: str

    class Deleted(Event):
        TOPIC = _topic("Deleted")
        EVENT_TYPE = event_type(Entity.DEPLOYMENT, Change.DELETED)
        catalog_version: int

    @staticmethod
    def create_id(skill_id: str, **_: Any) -> UUID:
        return deployment_id(skill_id)

    @event(Created)
    def __init__(
        self, *, skill_id: str, name: str, description: str, status: str, catalog_version: int
    ) -> None:
        self.skill_id = skill_id
        self.name = name
        self.description = description
        self.status = status
        self.catalog_version = catalog_version
        self.pins: dict[str, dict[str, Any]] = {}
        self.deleted = False

    @classmethod
    def pending(cls, skill_id: str) -> WorkflowDeployment:
        """A deployment for a skill the catalog has not told us about yet."""
        return cls(skill_id=skill_id, name="", description="", status=PENDING, catalog_version=0)

    # -- queries -----------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE and not self.deleted

    def pinned_version(self, credential_id: str) -> tuple[UUID, int]:
        """The definition version a new instance of ``credential_id`` starts on."""
        if self.deleted:
            raise Conflict(f"the skill {self.skill_id} is deleted: nothing new can start")
        if self.status != ACTIVE:
            raise Conflict(f"the deployment of skill {self.skill_id} is {self.status}")
        pin = self.pins.get(credential_id)
        if pin is None:
            raise NotFound(f"credential {credential_id} is not deployed")
        return pin["definition_id"], pin["version"]

    def is_stale(self, catalog_version: int) -> bool:
        return catalog_version <= self.catalog_version

    # -- commands ----------------------------------------------------------------------

    def update_from_catalog(
        self, *, name: str, description: str, status: str, catalog_version: int
    ) -> bool:
        if self.deleted or self.is_stale(catalog_version):
            return False
        self._catalog_updated(
            name=name,
            description=description,
            status=ACTIVE if status == ACTIVE else RETIRED,
            catalog_version=catalog_version,
        )
        return True

    def pin(self, *, credential_id: str, definition_id: UUID, version: int, by: str) -> None:
        if self.deleted:
            raise Conflict(f"the skill {self.skill_id} is deleted")
        current = self.pins.get(credential_id)
        if current == {"definition_id": definition_id, "version": version}:
            return
        self._pinned(credential_id=credential_id, definition_id=definition_id, version=version, by=by)

    def unpin(self, *, credential_id: str, by: str) -> None:
        if credential_id in self.pins and not self.deleted:
            self._unpinned(credential_id=credential_id, by=by)

    def set_status(self, actor: Actor, status: str) -> None:
        if not actor.is_admin:
            raise NotAllowed("only an admin can activate or retire a deployment")
        if status not in (ACTIVE, RETIRED):
            raise Conflict(f"a deployment is active or retired, not {status!r}")
        if self.deleted:
            raise Conflict(f"the skill {self.skill_id} is deleted")
        if self.status == PENDING:
            raise Conflict("the catalog has not published this skill yet")
        if status != self.status:
            self._status_changed(status=status, by=actor.user_id)

    def delete(self, *, catalog_version: int) -> bool:
        if self.deleted or self.is_stale(catalog_version):
            return False
        self._deleted(catalog_version=catalog_version)
        return True

    # -- mutators ----------------------------------------------------------------------

    @event(CatalogUpdated)
    def _catalog_updated(self, name: str, description: str, status: str, catalog_version: int) -> None:
        self.name = name
        self.description = description
        self.status = status
        self.catalog_version = catalog_version

    @event(DefinitionPinned)
    def _pinned(self, credential_id: str, definition_id: UUID, version: int, by: str) -> None:
        self.pins[credential_id] = {"definition_id": definition_id, "version": version}

    @event(DefinitionUnpinned)
    def _unpinned(self, credential_id: str, by: str) -> None:
        self.pins.pop(credential_id, None)

    @event(StatusChanged)
    def _status_changed(self, status: str, by: str) -> None:
        self.status = status

    @event(Deleted)
    def _deleted(self, catalog_version: int) -> None:
        self.deleted = True
        self.catalog_version = catalog_version
