"""Audit: an aggregate's history with who/what/when, its state at a version or a time,
and the global log as the CloudEvents the service publishes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from application.queries import audit
from domain.errors import NotFound
from tests.integration.test_read_models_support import (
    ASSESSORS,
    learner,
    run_to_end,
    setup_catalog,
)

pytestmark = pytest.mark.integration


def test_history_state_at_a_version_or_time_and_the_global_log(app: Any) -> None:
    _skill, credential = setup_catalog(app)
    instance_id = app.start_instance(learner(1), credential)
    run_to_end(app, instance_id, score=90)

    history = audit.history(app, instance_id)
    assert [entry["version"] for entry in history] == list(range(1, len(history) + 1))
    assert history[0]["fact"] == "Started" and history[0]["who"] == learner(1).user_id
    assert history[0]["type"] == "SKILLBASE_WORKFLOW_INSTANCE_CREATED"
    assert history[-1]["fact"] == "Completed" and history[-1]["change"]["result"] == "pass"
    assert [e["position"] for e in history] == sorted(e["position"] for e in history)

    task_id = app.get_task(audit.history(app, instance_id)[0]["change"]["opened_tasks"][0]).id
    task_history = audit.history(app, task_id)
    assert [e["fact"] for e in task_history] == ["Created", "Completed"]
    assert task_history[1]["who"] == learner(1).user_id

    assert audit.as_of(app, instance_id, version=1)["status"] == "running"
    assert audit.as_of(app, instance_id, version=len(history))["status"] == "completed"
    assert audit.as_of(app, instance_id, at=history[0]["when"])["version"] == 1
    assert audit.as_of(app, instance_id, at=history[-1]["when"] + timedelta(seconds=1))["result"] == "pass"
    with pytest.raises(NotFound):
        audit.as_of(app, instance_id, at=history[0]["when"] - timedelta(seconds=1))
    with pytest.raises(NotFound):
        audit.as_of(app, instance_id, version=len(history) + 5)

    log = audit.global_log(app, after=0, limit=1000)
    assert [event.sequence for event in log] == list(range(1, len(log) + 1))
    mine = [event for event in log if event.subject == f"instance/{instance_id}"]
    assert mine[0].type == "SKILLBASE_WORKFLOW_INSTANCE_CREATED"
    assert "achievement" in mine[-1].data
    assert audit.global_log(app, after=log[-2].sequence, limit=10) == log[-1:]
    assessed = [e for e in history if e["fact"] == "Advanced"][1]["change"]["cause_id"]
    assert [e["who"] for e in audit.history(app, assessed)][-2:] == [ASSESSORS[0].user_id] * 2  # claim, complete
