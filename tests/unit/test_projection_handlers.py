"""Projection handlers and cursors without I/O: rows follow events, counters follow rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import uuid4

import pytest

from application.queries.pagination import decode_cursor, encode_cursor
from domain.errors import InvalidInput
from domain.instance import WorkflowInstance
from domain.task import WorkflowTask
from projections.dashboards import DASH_INSTANCES, DASH_TASKS, Dashboards
from projections.inbox import TaskInbox
from projections.registry import PROJECTIONS

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _event(cls: type, version: int, at: datetime, **fields: object) -> object:
    event = object.__new__(cls)
    event.__dict__.update(originator_id=fields.pop("id"), originator_version=version, timestamp=at, **fields)
    return event


def test_every_projection_reads_only_the_topics_it_handles() -> None:
    for cls in PROJECTIONS.values():
        assert cls.topics() and all(topic.startswith("skillbase.workflow/") for topic in cls.topics())
    assert WorkflowInstance.Advanced.TOPIC not in Dashboards.topics()


def test_inbox_rows_follow_a_task_from_created_to_completed() -> None:
    inbox, task_id = TaskInbox(), uuid4()
    created = _event(WorkflowTask.Created, 1, T0, id=task_id, instance_id=uuid4(), learner_id="lin",
                     credential_id="c", skill_id="s", engine_task_id="e", element_id="assess",
                     name="Assess", kind="user", candidate_group="assessor", assignee=None, form="f.json",
                     documentation="", due_at=None)
    row = inbox.created(created, None)
    claimed = inbox.claimed(_event(WorkflowTask.Claimed, 2, T0 + timedelta(1), id=task_id, by="ada"), row)
    done = inbox.completed(_event(WorkflowTask.Completed, 3, T0 + timedelta(2), id=task_id, by="ada",
                                  data={}, evidence=[]), claimed)
    assert (row["status"], row["assignee"]) == ("open", None)
    assert claimed["assignee"] == "ada" and row["assignee"] is None  # handlers never mutate
    assert (done["status"], done["completed_by"], done["version"]) == ("completed", "ada", 3)


def test_dashboard_counters_follow_row_states() -> None:
    board = Dashboards()
    running = {"credential_id": "c", "skill_id": "s", "status": "running", "result": None}
    passed = {**running, "status": "completed", "result": "pass"}
    assert sorted(board.counts(DASH_INSTANCES, running)) == [
        ("credential", "c", "instances.running"), ("skill", "s", "instances.running")]
    assert ("skill", "s", "result.pass") in list(board.counts(DASH_INSTANCES, passed))
    task = {"credential_id": "c", "skill_id": "s", "candidate_group": "assessor", "status": "open"}
    assert ("credential", "c", "tasks.open.assessor") in list(board.counts(DASH_TASKS, task))
    assert list(board.counts(DASH_TASKS, {**task, "status": "completed"})) == []


def test_time_to_complete_comes_from_the_events_own_times() -> None:
    board, instance_id = Dashboards(), uuid4()
    started = board.started(SimpleNamespace(originator_id=instance_id, credential_id="c", skill_id="s",
                                            timestamp=T0), None)
    done = board.completed(SimpleNamespace(result="pass", timestamp=T0 + timedelta(hours=2)), started)
    assert done["seconds_to_complete"] == 7200


def test_cursors_are_opaque_and_belong_to_one_list() -> None:
    cursor = encode_cursor("inbox", [T0, uuid4()])
    assert len(decode_cursor("inbox", cursor, 2)) == 2
    with pytest.raises(InvalidInput):
        decode_cursor("instances", cursor, 2)
    with pytest.raises(InvalidInput):
        decode_cursor("inbox", "garbage!", 2)


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_a_batch_size_below_one_event_is_refused_up_front(size: object) -> None:
    """Size 0 made every step fail with IndexError (an empty batch counts as full) and the
    runner retry for ever; -1 was a SQL error each time."""
    from projections.follow import check_batch_size
    from projections.log import EventLog
    from projections.runner import ProjectionRunner

    with pytest.raises(ValueError, match="at least 1"):
        check_batch_size(size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        ProjectionRunner(TaskInbox(), EventLog("", "s", "t", "c", "a", None), batch_size=size)  # type: ignore[arg-type]
    assert check_batch_size(1) == 1


def test_the_cli_refuses_a_batch_size_below_one() -> None:
    import argparse

    from interface.commands.projections import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["projections", "run", "--batch-size", "0"])
    assert parser.parse_args(["projections", "rebuild", "--batch-size", "7"]).batch_size == 7
