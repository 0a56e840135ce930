"""For random command sequences, the read models built live equal the read models rebuilt
from zero, row for row (counters included)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.identity import Actor
from projections.registry import selected
from projections.service import start_projections
from tests.integration.test_read_models_support import (
    ADMIN,
    ASSESSORS,
    assert_live_equals_rebuilt,
    attempt,
    claim,
    learner,
    setup_catalog,
    submit,
    unclaim,
    wait_caught_up,
    work,
)

pytestmark = pytest.mark.integration

# Work on instances is listed several times so that sequences get far into the process.
ACTIONS = ("start", "start", "submit", "submit", "claim", "unclaim", "work", "work", "work", "cancel",
           "reassign", "rename", "retire", "activate", "delete_instance")
commands = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(0, 5), st.integers(0, 100)), min_size=1, max_size=30
)
CATALOG_VERSIONS = itertools.count(10)


class World:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.skill_id, self.credential_id = setup_catalog(app)
        self.instances: list[Any] = []
        # The store outlives one example: start each one with the skill active again.
        app.upsert_skill(skill_id=self.skill_id, version=next(CATALOG_VERSIONS), name="MIG welding",
                         description="", status="active")
        for number in range(2):
            self.run("start", number, 0)

    def run(self, action: str, who: int, number: int) -> None:
        app = self.app
        if action == "start":
            attempt(lambda: self.instances.append(app.start_instance(learner(who), self.credential_id)))
            return
        if action in ("rename", "retire", "activate"):
            version = next(CATALOG_VERSIONS)
            if action == "rename":
                attempt(lambda: app.upsert_credential(
                    credential_id=self.credential_id, version=version, skill_id=self.skill_id,
                    name=f"MIG welding {number}", description="renamed"))
            else:
                attempt(lambda: app.upsert_skill(
                    skill_id=self.skill_id, version=version, name="MIG welding",
                    description="", status="active" if action == "activate" else "retired"))
            return
        if not self.instances:
            return
        instance_id = self.instances[number % len(self.instances)]
        assessor = ASSESSORS[who % len(ASSESSORS)]
        if action == "submit":
            attempt(submit, app, instance_id)
        elif action == "claim":
            attempt(claim, app, instance_id, assessor)
        elif action == "unclaim":
            attempt(unclaim, app, instance_id, assessor)
        elif action == "work":
            attempt(work, app, instance_id, assessor, number)
        elif action == "cancel":
            owner = app.get_instance(instance_id).user_id
            attempt(app.cancel_instance, Actor.of(owner), instance_id, "changed my mind")
        elif action == "reassign":
            instance = app.get_instance(instance_id)
            if instance.open_tasks:
                attempt(app.reassign_task, ADMIN, instance.open_tasks[0], ASSESSORS[1].user_id)
        elif action == "delete_instance" and hasattr(app, "delete_instance"):
            attempt(app.delete_instance, ADMIN, instance_id)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(sequence=commands)
def test_live_read_models_equal_rebuilt_ones(app: Any, sequence: list[tuple[str, int, int]]) -> None:
    # Tiny live batches, large rebuild batches: the cut between batches must not matter.
    handle = start_projections(app, batch_size=3, idle_wait=0.05, standby_wait=0.1)
    try:
        world = World(app)
        for action, who, number in sequence:
            world.run(action, who, number)
        wait_caught_up(app, selected(None))
    finally:
        handle.stop()
    for projection in selected(None):
        assert_live_equals_rebuilt(app, projection)
