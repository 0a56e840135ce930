"""Catalog facts and definition administration.

Catalog events arrive late, twice or out of order, each with a per-entity ``version``:
a stale version changes nothing. Every handler is an upsert, so "updated before created"
works, and a delete that arrives first leaves a tombstone that older events cannot revive.
A credential that arrives before its skill pins itself in a ``pending`` deployment, which
the skill activates when it arrives (ADR 0004). Each handler takes an optional
``Tracking`` so the consumer saves a message's effect and its offset together.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking

from application.app import WorkflowApplication
from application.engine.builtin_templates import DEFAULT_TEMPLATE, load_template
from application.engine.bundle import ParsedBundle, validate_bundle
from domain.definition import WorkflowDefinition
from domain.deployment import ACTIVE, RETIRED, WorkflowDeployment
from domain.errors import Conflict, InvalidInput, NotAllowed, Problem
from domain.identity import SYSTEM, Actor
from domain.ids import definition_id, deployment_id

TEMPLATE_MAX_BYTES = 1024 * 1024
MAX_CATALOG_ID_CHARS = 200  # as the API's ids; kept in indexes of the read models


@lru_cache(maxsize=8)
def _template_bundle(name: str) -> ParsedBundle:
    return validate_bundle(load_template(name), max_bytes=TEMPLATE_MAX_BYTES)


class CatalogCommands(WorkflowApplication):
    """The catalog's and the admins' commands on definitions and deployments."""

    # -- skills ----------------------------------------------------------------------------

    def upsert_skill(
        self, *, skill_id: str, version: int, name: str, description: str, status: str,
        tracking: Tracking | None = None,
    ) -> bool:
        _check_catalog(version, skill_id=skill_id, name=name, description=description, status=status)
        deployment = self._find(WorkflowDeployment, deployment_id(skill_id))
        status = ACTIVE if status == ACTIVE else RETIRED
        if deployment is None:
            deployment = WorkflowDeployment(
                skill_id=skill_id, name=name, description=description, status=status,
                catalog_version=version,
            )
            changed = True
        else:
            changed = deployment.update_from_catalog(
                name=name, description=description, status=status, catalog_version=version
            )
        self.save_all(deployment, tracking=tracking)
        return changed

    def delete_skill(self, *, skill_id: str, version: int, tracking: Tracking | None = None) -> bool:
        _check_catalog(version, skill_id=skill_id)
        deployment = self._find(WorkflowDeployment, deployment_id(skill_id)) or WorkflowDeployment.pending(skill_id)
        changed = deployment.delete(catalog_version=version)
        self.save_all(deployment, tracking=tracking)
        return changed

    # -- credentials -----------------------------------------------------------------------

    def upsert_credential(
        self, *, credential_id: str, version: int, skill_id: str, name: str, description: str,
        template: str | None = None, tracking: Tracking | None = None,
    ) -> bool:
        _check_catalog(version, credential_id=credential_id, skill_id=skill_id, name=name,
                       description=description, template=template)
        definition = self._find(WorkflowDefinition, definition_id(credential_id))
        changed_aggregates: list[object] = []
        if definition is None:
            bundle = _template_bundle(template or DEFAULT_TEMPLATE)
            definition = WorkflowDefinition(
                credential_id=credential_id, skill_id=skill_id, name=name,
                description=description, catalog_version=version,
            )
            number = definition.add_version(
                process_id=bundle.process_id, files=bundle.files, sha256=bundle.sha256,
                spec_state=bundle.spec_state, engine_format=bundle.engine_format,
                added_by=SYSTEM.user_id, template=template or DEFAULT_TEMPLATE,
            )
            changed_aggregates.append(definition)
            deployment = self._deployment_or_pending(skill_id)
            if not deployment.deleted:  # a deleted skill pins nothing: its credentials start nothing
                deployment.pin(credential_id=credential_id, definition_id=definition.id, version=number,
                               by=SYSTEM.user_id)
                changed_aggregates.append(deployment)
            changed = True
        else:
            old_skill = definition.skill_id
            changed = definition.update_from_catalog(
                skill_id=skill_id, name=name, description=description, catalog_version=version
            )
            changed_aggregates.append(definition)
            if changed and old_skill != skill_id and definition.versions:
                old = self._deployment_or_pending(old_skill)
                pinned = old.pins.get(credential_id)
                old.unpin(credential_id=credential_id, by=SYSTEM.user_id)
                changed_aggregates.append(old)
                new = self._deployment_or_pending(skill_id)
                if not new.deleted:
                    version_number = pinned["version"] if pinned else definition.latest_version
                    new.pin(credential_id=credential_id, definition_id=definition.id, version=version_number,
                            by=SYSTEM.user_id)
                    changed_aggregates.append(new)
        self.save_all(*changed_aggregates, tracking=tracking)
        return changed

    def delete_credential(
        self, *, credential_id: str, version: int, skill_id: str | None = None,
        tracking: Tracking | None = None,
    ) -> bool:
        _check_catalog(version, credential_id=credential_id, **({} if skill_id is None else {"skill_id": skill_id}))
        definition = self._find(WorkflowDefinition, definition_id(credential_id))
        if definition is None:
            definition = WorkflowDefinition(
                credential_id=credential_id, skill_id=skill_id or "", name="", description="",
                catalog_version=0,
            )
        changed = definition.delete(catalog_version=version)
        aggregates: list[object] = [definition]
        if changed and definition.skill_id:
            deployment = self._find(WorkflowDeployment, deployment_id(definition.skill_id))
            if deployment is not None:
                deployment.unpin(credential_id=credential_id, by=SYSTEM.user_id)
                aggregates.append(deployment)
        self.save_all(*aggregates, tracking=tracking)
        return changed

    def _deployment_or_pending(self, skill_id: str) -> WorkflowDeployment:
        return self._find(WorkflowDeployment, deployment_id(skill_id)) or WorkflowDeployment.pending(skill_id)

    # -- administration --------------------------------------------------------------------

    def upload_definition_version(self, actor: Actor, credential_id: str, files: dict[str, bytes]) -> int:
        """Validates a bundle completely, then stores it as the next version.

        Uploading the very same bundle again returns the version it already is.
        """
        _require_admin(actor, "upload definitions")
        definition = self.get_definition(credential_id)
        bundle = validate_bundle(_as_bytes(files), max_bytes=self.bundle_max_bytes)
        existing = definition.find_version_by_sha256(bundle.sha256)
        if existing is not None:
            return existing.number
        number = definition.add_version(
            process_id=bundle.process_id, files=bundle.files, sha256=bundle.sha256,
            spec_state=bundle.spec_state, engine_format=bundle.engine_format, added_by=actor.user_id,
        )
        self.save_all(definition)
        return number

    def deploy_definition_version(self, actor: Actor, credential_id: str, number: int) -> UUID:
        """Pins a version: new instances of the credential start on it."""
        _require_admin(actor, "deploy definitions")
        definition = self.get_definition(credential_id)
        definition.get_version(number)
        if definition.deleted:  # the catalog withdrew it: pinning it again would revive it
            raise Conflict(f"the credential {credential_id} is deleted")
        deployment = self.get_deployment(definition.skill_id)
        deployment.pin(credential_id=credential_id, definition_id=definition.id, version=number, by=actor.user_id)
        self.save_all(deployment)
        return deployment.id

    def set_deployment_status(self, actor: Actor, skill_id: str, status: str) -> None:
        deployment = self.get_deployment(skill_id)
        deployment.set_status(actor, status)
        self.save_all(deployment)


def _check_catalog(version: Any, **texts: Any) -> None:
    """Catalog facts are checked before anything is stored: a positive integer version,
    and ids and names that are text a database column can hold (ids at most 200 characters,
    as the read models index them)."""
    problems = []
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(Problem("$.data.version", "a positive integer"))
    for name, value in texts.items():
        if value is None and name == "template":
            continue
        if not isinstance(value, str) or "\x00" in value or len(value) > 10_000:
            problems.append(Problem(f"$.data.{name}", "text without NUL characters, at most 10,000 long"))
        elif name.endswith("id") and not value.strip():
            problems.append(Problem(f"$.data.{name}", "a non-empty id"))
        elif name.endswith("id") and len(value) > MAX_CATALOG_ID_CHARS:
            problems.append(Problem(f"$.data.{name}", f"an id of at most {MAX_CATALOG_ID_CHARS} characters"))
    if problems:
        raise InvalidInput("the catalog event is not valid", problems)


def _as_bytes(files: Any) -> dict[str, bytes]:
    """A bundle's files as bytes: text is taken as UTF-8; anything else is refused."""
    if not isinstance(files, dict) or not files:
        raise InvalidInput("a bundle is a map of file names to contents", [Problem("$.files", "a non-empty map")])
    found, problems = {}, []
    for name, content in files.items():
        if isinstance(content, str):
            content = content.encode("utf-8", errors="surrogateescape")
        if not isinstance(name, str) or not isinstance(content, (bytes, bytearray)):
            problems.append(Problem(f"$.files[{name!r}]", "file contents are text or bytes"))
        else:
            found[name] = bytes(content)
    if problems:
        raise InvalidInput("the bundle is not valid", problems)
    return found


def _require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise NotAllowed(f"only an admin can {what}")
