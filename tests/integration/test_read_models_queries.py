"""Query functions: read-your-writes with wait_for, inbox visibility, cursor pages,
instances, dashboards, catalog, achievements."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from application.queries import achievements, catalog, dashboards, inbox, instances
from application.queries import store as store_module
from application.queries.store import ReadModelBehind, ReadStore
from domain.errors import InvalidInput
from domain.identity import Actor
from projections.service import start_projections
from tests.integration.test_read_models_support import (
    ADMIN,
    ASSESSORS,
    learner,
    run_to_end,
    setup_catalog,
    submit,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def running(app: Any) -> Iterator[Any]:
    handle = start_projections(app, idle_wait=0.05, standby_wait=0.1)
    yield handle
    handle.stop()


def test_a_query_waiting_for_a_position_returns_the_write_it_waited_for(app: Any, running: Any) -> None:
    store = ReadStore.of(app)
    _skill, credential = setup_catalog(app)
    for number in range(20):
        instance_id = app.start_instance(learner(number), credential)
        head = app.recorder.max_notification_id()
        page = inbox.my_tasks(store, learner(number).user_id, wait_for=head, timeout=5)
        assert [task["instance_id"] for task in page.items] == [instance_id]
        assert page.position >= head


def test_waiting_is_bounded(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_catalog(app)
    handle = start_projections(app, idle_wait=0.05)
    store = ReadStore.of(app)
    store.wait_for("task_inbox", app.recorder.max_notification_id(), timeout=5)
    handle.stop()
    with pytest.raises(ReadModelBehind):
        inbox.my_tasks(store, "nobody", wait_for=10**9, timeout=0.2)
    monkeypatch.setattr(store_module, "MAX_WAIT", 0.3)
    with pytest.raises(ReadModelBehind):  # a NaN timeout waited for ever
        store.wait_for("task_inbox", 10**9, timeout=float("nan"))


def test_inbox_shows_my_tasks_and_my_groups_tasks_page_by_page(app: Any, running: Any) -> None:
    store = ReadStore.of(app)
    _skill, credential = setup_catalog(app)
    started = [app.start_instance(learner(number), credential) for number in range(7)]
    for instance_id in started:
        submit(app, instance_id)  # each now has an open "assessor" task
    mine = app.get_instance(started[0]).open_tasks[0]
    app.claim_task(ASSESSORS[0], mine)
    head = app.recorder.max_notification_id()

    seen, cursor = [], None
    while True:
        page = inbox.group_tasks(store, ["Assessor"], limit=3, cursor=cursor, wait_for=head)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 7 and len({task["id"] for task in seen}) == 7
    assert [(t["created_at"], t["id"]) for t in seen] == sorted((t["created_at"], t["id"]) for t in seen)
    assert len(inbox.group_tasks(store, ["assessor"], unclaimed_only=True).items) == 6
    assert inbox.group_tasks(store, ["observer"]).items == []
    ada = inbox.inbox(store, ASSESSORS[0].user_id, ["assessor"])
    assert len(ada.items) == 7  # her claimed task is listed once
    assert [t["id"] for t in inbox.my_tasks(store, ASSESSORS[0].user_id).items] == [mine]
    by_instance = inbox.tasks(store, instance_id=started[0])
    assert [t["status"] for t in by_instance.items] == ["completed", "open"]
    learner_done = inbox.completed_by(store, learner(0).user_id)
    assert len(learner_done.items) == 1 and learner_done.items[0]["instance_id"] == started[0]
    with pytest.raises(InvalidInput):
        inbox.group_tasks(store, ["assessor"], cursor=page.next_cursor or "bm90LWEtY3Vyc29y")


def test_instances_dashboards_catalog_and_achievements(app: Any, running: Any) -> None:
    store = ReadStore.of(app)
    skill, credential = setup_catalog(app)
    started = [app.start_instance(learner(number), credential) for number in range(6)]
    run_to_end(app, started[0], score=90)
    run_to_end(app, started[1], score=95)
    run_to_end(app, started[2], score=10)
    app.cancel_instance(Actor.of(learner(3).user_id), started[3], "no time")
    head = app.recorder.max_notification_id()

    done = instances.list_instances(store, credential_id=credential, status="completed", wait_for=head)
    assert {row["id"] for row in done.items} == set(started[:3])
    assert {row["result"] for row in done.items} == {"pass", "fail"}
    first = instances.list_instances(store, skill_id=skill, limit=4)
    rest = instances.list_instances(store, skill_id=skill, limit=4, cursor=first.next_cursor)
    assert len(first.items) == 4 and len(rest.items) == 2 and rest.next_cursor is None
    assert instances.list_instances(store, user_id=learner(3).user_id).items[0]["status"] == "cancelled"

    board = dashboards.dashboard(store, "credential", credential, wait_for=head)
    assert board["instances_by_status"] == {"completed": 3, "cancelled": 1, "running": 2}
    assert (board["passed"], board["failed"]) == (2, 1)
    assert board["pass_rate"] == pytest.approx(2 / 3)
    assert board["median_seconds_to_complete"] > 0 and board["p90_seconds_to_complete"] > 0
    assert board["open_tasks_by_group"] == {"learner": 2}
    assert dashboards.dashboard(store, "skill", skill)["instances_by_status"] == board["instances_by_status"]

    definitions = catalog.definitions(store, skill_id=skill, wait_for=head)
    assert [row["credential_id"] for row in definitions.items] == [credential]
    assert definitions.items[0]["latest_version"] == 1
    deployment = catalog.deployments(store).items[0]
    assert deployment["status"] == "active" and credential in deployment["pins"]

    passes = achievements.achievements(store, learner(0).user_id, wait_for=head)
    assert [row["id"] for row in passes.items] == [started[0]] and passes.extra["total"] == 1
    assert achievements.pass_count(store, learner(2).user_id) == 0
    past_the_last = _crafted("achievements", passes.items[0]["achieved_at"].isoformat(), str(started[0]))
    beyond = achievements.achievements(store, learner(0).user_id, cursor=past_the_last)
    assert beyond.items == [] and beyond.extra["total"] == 1  # was 0: the count rode on the page's rows
    nobody = achievements.achievements(store, learner(2).user_id)
    assert nobody.items == [] and nobody.extra["total"] == 0


def _crafted(kind: str, *values: Any) -> str:
    raw = json.dumps([kind, *values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Each list with its cursor kind and a cursor of the right shape but the wrong types: a
# string that is no timestamp, objects and arrays, nulls, booleans for integers.
_LISTS: list[tuple[str, Any]] = [
    ("instances", lambda store, cursor: instances.list_instances(store, cursor=cursor)),
    ("inbox", lambda store, cursor: inbox.inbox(store, "someone", ["assessor"], cursor=cursor)),
    ("inbox", lambda store, cursor: inbox.my_tasks(store, "someone", cursor=cursor)),
    ("tasks", lambda store, cursor: inbox.tasks(store, cursor=cursor)),
    ("completed", lambda store, cursor: inbox.completed_by(store, "someone", cursor=cursor)),
    ("definitions", lambda store, cursor: catalog.definitions(store, cursor=cursor)),
    ("deployments", lambda store, cursor: catalog.deployments(store, cursor=cursor)),
    ("achievements", lambda store, cursor: achievements.achievements(store, "someone", cursor=cursor)),
]
_BAD_VALUES = [("garbage", "x"), ({"a": 1}, [1]), (None, None), (True, 1), ("2024-01-01T00:00:00+00:00", "x"),
               ("a\x00b", "6b1f0d52-8a0e-5c43-9e5d-2f1c7d0b9a12")]


@pytest.mark.parametrize("values", _BAD_VALUES, ids=repr)
def test_a_crafted_cursor_is_invalid_input_on_every_list(app: Any, running: Any, values: tuple[Any, Any]) -> None:
    store = ReadStore.of(app)
    setup_catalog(app)
    for projection in ("instances", "task_inbox", "catalog", "achievements"):
        store.wait_for(projection, app.recorder.max_notification_id(), timeout=5)
    for kind, read in _LISTS:
        with pytest.raises(InvalidInput) as raised:
            read(store, _crafted(kind, *values))
        assert [(p.path, p.message) for p in raised.value.problems] == [("cursor", "invalid cursor")], kind


def test_a_cursor_of_the_right_types_still_pages(app: Any, running: Any) -> None:
    store = ReadStore.of(app)
    _skill, credential = setup_catalog(app)
    started = [app.start_instance(learner(number), credential) for number in range(3)]
    head = app.recorder.max_notification_id()
    first = instances.list_instances(store, limit=2, wait_for=head)
    rest = instances.list_instances(store, limit=2, cursor=first.next_cursor)
    assert {row["id"] for row in first.items + rest.items} == set(started)
    braces = _crafted("instances", first.items[-1]["started_at"].isoformat(), f"{{{first.items[-1]['id']}}}")
    assert [row["id"] for row in instances.list_instances(store, limit=2, cursor=braces).items] == \
        [row["id"] for row in rest.items]


def test_a_nul_character_from_the_log_does_not_stop_a_read_model(app: Any, running: Any) -> None:
    """The API refuses NUL, but the log may hold one from before, or from another path: the
    read model stores U+FFFD for it and goes on, rather than retry that batch for ever."""
    from tests.integration.test_read_models_support import open_task, wait_caught_up
    from projections.registry import selected

    _skill, credential = setup_catalog(app)
    instance_id = app.start_instance(learner(1), credential)
    task = open_task(app, instance_id)
    app.reassign_task(ADMIN, task.id, "bo\x00")
    later = app.start_instance(learner(2), credential)  # and the events after it still arrive
    wait_caught_up(app, selected(["task_inbox"]), timeout=10)
    store = ReadStore.of(app)
    with store.cursor() as cur:
        cur.execute(f'SELECT assignee FROM "{store.schema}".rm_tasks WHERE id = %s', (task.id,))
        row = cur.fetchone()
    assert row["assignee"] == "bo\ufffd"
    assert open_task(app, later) is not None


PAID_BPMN = Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "paid-credential.bpmn"


def test_the_listed_version_is_the_aggregates_after_every_kind_of_event(app: Any, running: Any) -> None:
    """An If-Match taken from a list must match the entity's ETag, whatever changed last."""
    store = ReadStore.of(app)
    _skill, credential = setup_catalog(app)
    instance_id = app.start_instance(learner(0), credential)
    submit(app, instance_id)  # FileAttached, then Advanced
    app.record_email_sent(instance_id, event_id="e-1", index=0, message_id="<m-1@example.org>")
    app.raise_incident(instance_id, incident_id="i-1", kind="email", subject={"event_id": "e-1"},
                       reason="refused", attempts=3)
    app.retry_incident(ADMIN, instance_id, "i-1")
    listed = instances.get_instance(store, instance_id, wait_for=app.recorder.max_notification_id())
    assert listed is not None and listed["version"] == app.get_instance(instance_id).version

    number = app.upload_definition_version(ADMIN, credential, {"paid-credential.bpmn": PAID_BPMN.read_bytes()})
    app.deploy_definition_version(ADMIN, credential, number)
    (task_id,) = app.get_instance(app.start_instance(learner(1), credential)).open_tasks
    assert app.remind_task(task_id) and app.mark_task_overdue(task_id, datetime.now(UTC) + timedelta(days=3))
    task = inbox.get_task(store, task_id, wait_for=app.recorder.max_notification_id())
    assert task is not None and task["version"] == app.get_task(task_id).version == 3


def test_a_long_indexed_value_from_the_log_does_not_stop_a_read_model(app: Any, running: Any) -> None:
    """A B-tree entry holds ~2,700 bytes: an assignee of 4,500 bytes (refused by the API, but
    the log may hold one from before) made the task inbox retry that batch for ever."""
    from tests.integration.test_read_models_support import open_task, wait_caught_up
    from projections.registry import selected

    _skill, credential = setup_catalog(app)
    task = open_task(app, app.start_instance(learner(1), credential))
    rng = random.Random(1)  # not repetitive: PostgreSQL compresses what is, and it would fit
    long_name = "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(1500))
    stored_before = app.get_task(task.id)  # the domain now refuses it: an event from before that
    stored_before._reassigned(by=ADMIN.user_id, assignee=long_name)
    app.save_all(stored_before)
    later = app.start_instance(learner(2), credential)
    wait_caught_up(app, selected(["task_inbox", "dashboards"]), timeout=10)
    row = inbox.get_task(ReadStore.of(app), task.id)
    assert row is not None and row["assignee"] == long_name[:341]  # 1,024 bytes of it (3 a character)
    assert inbox.get_task(ReadStore.of(app), open_task(app, later).id) is not None


def test_the_longest_user_id_a_token_may_carry_is_listed_whole(app: Any, running: Any) -> None:
    """255 characters of 3 bytes each: cut at 600 bytes, the learner's own lists came back empty."""
    sub = "学" * 255
    _skill, credential = setup_catalog(app)
    instance_id = app.start_instance(Actor.of(sub), credential)
    head = app.recorder.max_notification_id()
    store = ReadStore.of(app)
    assert [row["id"] for row in instances.list_instances(store, user_id=sub, wait_for=head).items] == [instance_id]
    assert len(inbox.my_tasks(store, sub, wait_for=head).items) == 1


def test_a_nul_character_inside_a_json_value_does_not_stop_a_read_model(app: Any, running: Any) -> None:
    from tests.integration.test_read_models_support import wait_caught_up
    from projections.registry import selected

    _skill, credential = setup_catalog(app)
    admin = Actor.of("adm\x00in", "admin")  # refused as a token's sub; here as if stored before that
    number = app.upload_definition_version(admin, credential, {"paid-credential.bpmn": PAID_BPMN.read_bytes()})
    app.deploy_definition_version(admin, credential, number)
    wait_caught_up(app, selected(["catalog"]), timeout=10)
    (definition,) = [row for row in catalog.definitions(ReadStore.of(app)).items if row["credential_id"] == credential]
    assert definition["versions"][-1]["added_by"] == "adm\ufffdin"
