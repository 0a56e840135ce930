"""Public application methods answer bad input with domain errors only, never a library's
exception (a review found several that escaped)."""

from __future__ import annotations

import pytest

from application.service import WorkflowService
from domain.errors import InvalidInput, NotFound
from domain.identity import Actor
from interface.examples import load_example_catalog

ADMIN = Actor.of("admin-avi", "admin")
LEARNER = Actor.of("learner-lin", email="lin@example.org")


@pytest.fixture
def app() -> WorkflowService:
    service = WorkflowService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    load_example_catalog(service)
    return service


@pytest.mark.parametrize("bad_id", ["not-a-uuid", 12345, "", "\x00"])
def test_a_malformed_id_is_not_found(app: WorkflowService, bad_id: object) -> None:
    with pytest.raises(NotFound):
        app.get_task(bad_id)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        app.get_instance(bad_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"version": "x"}, {"version": 0}, {"version": True}, {"skill_id": "s\x00"}, {"name": None},
    {"skill_id": "s" * 201},  # ids are kept in the read models' indexes
])
def test_odd_catalog_values_are_refused_before_anything_is_stored(app: WorkflowService, kwargs: dict) -> None:
    before = app.recorder.max_notification_id()
    values = {"skill_id": "skill-2", "version": 1, "name": "Welding", "description": "", "status": "active", **kwargs}
    with pytest.raises(InvalidInput):
        app.upsert_skill(**values)
    assert app.recorder.max_notification_id() == before


def test_a_template_that_is_not_a_name_is_refused(app: WorkflowService) -> None:
    with pytest.raises(InvalidInput):
        app.upsert_credential(credential_id="c-2", version=1, skill_id="s-2", name="n", description="",
                              template=["a"])  # type: ignore[arg-type]


def test_form_data_nested_absurdly_deep_is_invalid_input(app: WorkflowService) -> None:
    credential = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
    instance_id = app.start_instance(LEARNER, credential)
    (submit,) = app.get_instance(instance_id).open_tasks
    deep: object = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidInput):
        app.complete_task(LEARNER, submit, {"statement": deep})


def test_a_bundle_of_the_wrong_types_is_invalid_input(app: WorkflowService) -> None:
    credential = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
    with pytest.raises(InvalidInput):
        app.upload_definition_version(ADMIN, credential, {"a.bpmn": 42})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput):
        app.upload_definition_version(ADMIN, credential, [])  # type: ignore[arg-type]
