"""WorkflowDefinition and WorkflowDeployment rules, on the aggregates alone (no I/O)."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from domain.definition import WorkflowDefinition
from domain.deployment import ACTIVE, PENDING, RETIRED, WorkflowDeployment
from domain.errors import Conflict, NotAllowed, NotFound
from domain.identity import Actor
from domain.ids import definition_id, deployment_id

ADMIN = Actor.of("root", "admin")
LEARNER = Actor.of("learner-lin")


def make_definition(catalog_version: int = 1) -> WorkflowDefinition:
    return WorkflowDefinition(
        credential_id="cred-1", skill_id="skill-1", name="MIG 2", description="d",
        catalog_version=catalog_version,
    )


def add_version(definition: WorkflowDefinition, sha: str = "aa") -> int:
    return definition.add_version(
        process_id="p", files={"p.bpmn": "<x/>"}, sha256=sha, spec_state={"spec": {}},
        engine_format="spiff-bpmn/1.4", added_by="root",
    )


def make_deployment(status: str = ACTIVE, catalog_version: int = 1) -> WorkflowDeployment:
    return WorkflowDeployment(
        skill_id="skill-1", name="MIG", description="d", status=status, catalog_version=catalog_version,
    )


# -- definition ----------------------------------------------------------------------------


def test_definition_and_deployment_ids_are_uuid5_of_the_catalog_ids() -> None:
    assert make_definition().id == definition_id("cred-1")
    assert make_deployment().id == deployment_id("skill-1")
    assert definition_id("cred-1") != definition_id("cred-2")
    assert definition_id("x") != deployment_id("x")


def test_versions_are_numbered_from_one_and_each_keeps_its_content() -> None:
    definition = make_definition()
    assert definition.latest_version == 0
    assert add_version(definition, "aa") == 1
    time.sleep(0.002)
    assert add_version(definition, "bb") == 2
    assert definition.latest_version == 2
    assert definition.get_version(1).sha256 == "aa"
    assert definition.get_version(2).sha256 == "bb"
    assert definition.find_version_by_sha256("bb").number == 2
    assert definition.find_version_by_sha256("cc") is None
    # added_at is when that version was added, not when the event before it happened.
    assert definition.get_version(2).added_at == definition.modified_on
    assert definition.get_version(1).added_at < definition.get_version(2).added_at


def test_an_unknown_version_is_not_found() -> None:
    definition = make_definition()
    add_version(definition)
    with pytest.raises(NotFound):
        definition.get_version(2)
    with pytest.raises(NotFound):
        definition.get_version(0)


def test_stale_catalog_updates_are_ignored() -> None:
    definition = make_definition(catalog_version=2)
    assert definition.update_from_catalog(skill_id="s2", name="old", description="", catalog_version=2) is False
    assert definition.update_from_catalog(skill_id="s2", name="older", description="", catalog_version=1) is False
    assert definition.name == "MIG 2" and definition.version == 1
    assert definition.update_from_catalog(skill_id="s2", name="new", description="", catalog_version=3) is True
    assert (definition.name, definition.skill_id, definition.catalog_version) == ("new", "s2", 3)


def test_a_deleted_definition_takes_no_updates_or_versions() -> None:
    definition = make_definition()
    assert definition.delete(catalog_version=1) is False  # stale delete
    assert definition.deleted is False
    assert definition.delete(catalog_version=2) is True
    assert definition.deleted is True
    assert definition.delete(catalog_version=5) is False
    assert definition.update_from_catalog(skill_id="s", name="n", description="", catalog_version=9) is False
    with pytest.raises(Conflict):
        add_version(definition)
    assert definition.catalog_version == 2


def test_definition_replay() -> None:
    definition = make_definition()
    add_version(definition)
    definition.update_from_catalog(skill_id="s2", name="n", description="", catalog_version=2)
    add_version(definition, "bb")
    copy = None
    for e in definition.collect_events():
        copy = e.mutate(copy)
    assert copy.__dict__.keys() == definition.__dict__.keys()
    assert {n: (v.sha256, v.added_at) for n, v in copy.versions.items()} == {
        n: (v.sha256, v.added_at) for n, v in definition.versions.items()
    }


# -- deployment ----------------------------------------------------------------------------


def test_an_active_deployment_starts_its_pinned_version() -> None:
    deployment = make_deployment()
    d_id = uuid4()
    deployment.pin(credential_id="cred-1", definition_id=d_id, version=3, by="root")
    assert deployment.pinned_version("cred-1") == (d_id, 3)
    with pytest.raises(NotFound):
        deployment.pinned_version("cred-2")


def test_pinning_the_same_version_twice_records_it_once() -> None:
    deployment = make_deployment()
    d_id = uuid4()
    deployment.pin(credential_id="c", definition_id=d_id, version=1, by="root")
    deployment.pin(credential_id="c", definition_id=d_id, version=1, by="root")
    deployment.pin(credential_id="c", definition_id=d_id, version=2, by="root")
    assert [type(e).__name__ for e in deployment.collect_events()] == [
        "Created", "DefinitionPinned", "DefinitionPinned"
    ]


def test_a_pending_deployment_cannot_be_started() -> None:
    deployment = WorkflowDeployment.pending("skill-1")
    assert deployment.status == PENDING and not deployment.is_active
    deployment.pin(credential_id="c", definition_id=uuid4(), version=1, by="system")
    with pytest.raises(Conflict, match="pending"):
        deployment.pinned_version("c")
    # when the skill arrives, the pending deployment becomes active and starts the pin
    assert deployment.update_from_catalog(name="MIG", description="", status=ACTIVE, catalog_version=1)
    assert deployment.is_active
    assert deployment.pinned_version("c")[1] == 1


def test_a_retired_deployment_cannot_be_started() -> None:
    deployment = make_deployment()
    deployment.pin(credential_id="c", definition_id=uuid4(), version=1, by="root")
    deployment.set_status(ADMIN, RETIRED)
    with pytest.raises(Conflict, match="retired"):
        deployment.pinned_version("c")


def test_a_deleted_deployment_starts_nothing() -> None:
    deployment = make_deployment()
    deployment.pin(credential_id="c", definition_id=uuid4(), version=1, by="root")
    assert deployment.delete(catalog_version=2) is True
    assert not deployment.is_active
    with pytest.raises(Conflict, match="deleted"):
        deployment.pinned_version("c")
    with pytest.raises(Conflict):
        deployment.pin(credential_id="c2", definition_id=uuid4(), version=1, by="root")
    with pytest.raises(Conflict):
        deployment.set_status(ADMIN, ACTIVE)
    # stale or later catalog updates do not revive it
    assert deployment.update_from_catalog(name="n", description="", status=ACTIVE, catalog_version=9) is False
    assert deployment.deleted


def test_stale_skill_updates_and_deletes_are_ignored() -> None:
    deployment = make_deployment(catalog_version=3)
    assert deployment.update_from_catalog(name="old", description="", status=RETIRED, catalog_version=3) is False
    assert deployment.delete(catalog_version=2) is False
    assert deployment.is_active and deployment.name == "MIG"
    assert deployment.update_from_catalog(name="new", description="", status="weird", catalog_version=4)
    assert deployment.status == RETIRED  # anything but "active" retires


def test_only_an_admin_changes_the_status_and_only_to_active_or_retired() -> None:
    deployment = make_deployment()
    with pytest.raises(NotAllowed):
        deployment.set_status(LEARNER, RETIRED)
    with pytest.raises(Conflict):
        deployment.set_status(ADMIN, "paused")
    assert deployment.is_active
    deployment.set_status(ADMIN, RETIRED)
    deployment.set_status(ADMIN, RETIRED)
    assert [type(e).__name__ for e in deployment.collect_events()] == ["Created", "StatusChanged"]
    with pytest.raises(Conflict):
        WorkflowDeployment.pending("s").set_status(ADMIN, ACTIVE)


def test_unpin_removes_the_credential() -> None:
    deployment = make_deployment()
    deployment.pin(credential_id="c", definition_id=uuid4(), version=1, by="root")
    deployment.unpin(credential_id="c", by="root")
    deployment.unpin(credential_id="c", by="root")  # nothing left: no event
    with pytest.raises(NotFound):
        deployment.pinned_version("c")
    assert [type(e).__name__ for e in deployment.collect_events()][-1] == "DefinitionUnpinned"
