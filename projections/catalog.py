"""Definitions and deployments as the catalog sees them: names, skills, versions, pins,
status, and whether the catalog deleted them."""

from __future__ import annotations

from typing import Any

from domain.definition import WorkflowDefinition
from domain.deployment import WorkflowDeployment
from projections.projection import Projection, Row, on
from projections.table import Table

DEFINITIONS = Table(
    name="rm_definitions",
    columns=(
        ("id", "uuid NOT NULL"),
        ("credential_id", "text NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("name", "text NOT NULL"),
        ("description", "text NOT NULL"),
        ("catalog_version", "bigint NOT NULL"),
        ("latest_version", "integer NOT NULL"),
        ("versions", "jsonb NOT NULL"),
        ("deleted", "boolean NOT NULL"),
        ("created_at", "timestamptz NOT NULL"),
        ("updated_at", "timestamptz NOT NULL"),
        ("version", "integer NOT NULL"),
    ),
    indexes=("(credential_id)", "(skill_id, credential_id)"),
)

DEPLOYMENTS = Table(
    name="rm_deployments",
    columns=(
        ("id", "uuid NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("name", "text NOT NULL"),
        ("description", "text NOT NULL"),
        ("status", "text NOT NULL"),
        ("catalog_version", "bigint NOT NULL"),
        ("pins", "jsonb NOT NULL"),
        ("deleted", "boolean NOT NULL"),
        ("created_at", "timestamptz NOT NULL"),
        ("updated_at", "timestamptz NOT NULL"),
        ("version", "integer NOT NULL"),
    ),
    indexes=("(skill_id)", "(status, skill_id)"),
)


def _touch(event: Any, row: Row, **changes: Any) -> Row:
    return {**row, **changes, "updated_at": event.timestamp, "version": event.originator_version}


class Catalog(Projection):
    name = "catalog"
    tables = (DEFINITIONS, DEPLOYMENTS)

    # -- definitions -----------------------------------------------------------------------

    @on(DEFINITIONS, WorkflowDefinition.Created)
    def definition_created(self, event: WorkflowDefinition.Created, row: Row | None) -> Row:
        return {
            "id": event.originator_id, "credential_id": event.credential_id, "skill_id": event.skill_id,
            "name": event.name, "description": event.description, "catalog_version": event.catalog_version,
            "latest_version": 0, "versions": [], "deleted": False, "created_at": event.timestamp,
            "updated_at": event.timestamp, "version": event.originator_version,
        }

    @on(DEFINITIONS, WorkflowDefinition.CatalogUpdated)
    def definition_updated(self, event: WorkflowDefinition.CatalogUpdated, row: Row | None) -> Row | None:
        return row and _touch(event, row, skill_id=event.skill_id, name=event.name,
                              description=event.description, catalog_version=event.catalog_version)

    @on(DEFINITIONS, WorkflowDefinition.VersionAdded)
    def version_added(self, event: WorkflowDefinition.VersionAdded, row: Row | None) -> Row | None:
        if row is None:
            return None
        version = {"number": event.number, "process_id": event.process_id, "sha256": event.sha256,
                   "added_by": event.added_by, "added_at": event.timestamp.isoformat(),
                   "template": event.template}
        return _touch(event, row, versions=[*row["versions"], version],
                      latest_version=max(row["latest_version"], event.number))

    @on(DEFINITIONS, WorkflowDefinition.Deleted)
    def definition_deleted(self, event: WorkflowDefinition.Deleted, row: Row | None) -> Row | None:
        return row and _touch(event, row, deleted=True, catalog_version=event.catalog_version)

    # -- deployments -----------------------------------------------------------------------

    @on(DEPLOYMENTS, WorkflowDeployment.Created)
    def deployment_created(self, event: WorkflowDeployment.Created, row: Row | None) -> Row:
        return {
            "id": event.originator_id, "skill_id": event.skill_id, "name": event.name,
            "description": event.description, "status": event.status,
            "catalog_version": event.catalog_version, "pins": {}, "deleted": False,
            "created_at": event.timestamp, "updated_at": event.timestamp, "version": event.originator_version,
        }

    @on(DEPLOYMENTS, WorkflowDeployment.CatalogUpdated)
    def deployment_updated(self, event: WorkflowDeployment.CatalogUpdated, row: Row | None) -> Row | None:
        return row and _touch(event, row, name=event.name, description=event.description,
                              status=event.status, catalog_version=event.catalog_version)

    @on(DEPLOYMENTS, WorkflowDeployment.DefinitionPinned)
    def pinned(self, event: WorkflowDeployment.DefinitionPinned, row: Row | None) -> Row | None:
        pin = {"definition_id": str(event.definition_id), "version": event.version, "by": event.by}
        return row and _touch(event, row, pins={**row["pins"], event.credential_id: pin})

    @on(DEPLOYMENTS, WorkflowDeployment.DefinitionUnpinned)
    def unpinned(self, event: WorkflowDeployment.DefinitionUnpinned, row: Row | None) -> Row | None:
        if row is None:
            return None
        pins = {k: v for k, v in row["pins"].items() if k != event.credential_id}
        return _touch(event, row, pins=pins)

    @on(DEPLOYMENTS, WorkflowDeployment.StatusChanged)
    def status_changed(self, event: WorkflowDeployment.StatusChanged, row: Row | None) -> Row | None:
        return row and _touch(event, row, status=event.status)

    @on(DEPLOYMENTS, WorkflowDeployment.Deleted)
    def deployment_deleted(self, event: WorkflowDeployment.Deleted, row: Row | None) -> Row | None:
        return row and _touch(event, row, deleted=True, catalog_version=event.catalog_version)
