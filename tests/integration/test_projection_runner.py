"""Runners: a crash in the middle of a batch counts nothing twice and misses nothing; of two
runners on one projection only one writes, and the other takes over when it dies; a lost
connection is survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from projections.catalog import Catalog
from projections.dashboards import Dashboards
from projections.inbox import TaskInbox
from projections.log import EventLog
from projections.projection import Projection
from projections.runner import ProjectionRunner
from tests.integration.test_read_models_support import (
    assert_live_equals_rebuilt,
    learner,
    run_to_end,
    setup_catalog,
    submit,
    wait_caught_up,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _populate(app: Any, count: int) -> list[Any]:
    _skill, credential = setup_catalog(app)
    instances = [app.start_instance(learner(n), credential) for n in range(count)]
    for number, instance_id in enumerate(instances):
        if number % 3 == 0:
            run_to_end(app, instance_id, score=40 + number)
        elif number % 3 == 1:
            submit(app, instance_id)
    return instances


def _wait(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class FailsOnce(Dashboards):
    """Dashboards whose handler raises once, in the middle of a batch, after some rows."""

    name = "dashboards"
    failures = 1
    calls = 0

    def counts(self, table: Any, row: Any) -> Any:
        type(self).calls += 1
        if type(self).calls == 7 and type(self).failures:
            type(self).failures -= 1
            raise RuntimeError("crash in the middle of a batch")
        return super().counts(table, row)


def test_crash_in_a_batch_counts_nothing_twice_and_misses_nothing(app: Any) -> None:
    _populate(app, 12)
    runner = ProjectionRunner(FailsOnce(), EventLog.of(app), batch_size=20, idle_wait=0.05)
    runner.backoff.first = 0.01
    runner.start()
    try:
        wait_caught_up(app, [Dashboards()])
    finally:
        runner.stop()
    assert runner.errors == 1
    assert assert_live_equals_rebuilt(app, Dashboards()) > 0


def test_killed_runner_process_resumes_exactly(app: Any, settings: Any) -> None:
    _populate(app, 30)
    env = {**os.environ, "SKILLBASE_WORKFLOW_DATABASE_HOST": settings.database_host,
           "SKILLBASE_WORKFLOW_DATABASE_PORT": str(settings.database_port),
           "SKILLBASE_WORKFLOW_DATABASE_NAME": settings.database_name,
           "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": settings.database_schema,
           "SKILLBASE_WORKFLOW_DATA_DIR": settings.data_dir}
    command = [sys.executable, "-m", "interface.cli", "projections", "run", "dashboards", "--batch-size", "2"]
    event_log = EventLog.of(app)
    head = app.recorder.max_notification_id()

    def position() -> int:
        with event_log.connect("test") as conn:
            try:
                row = conn.execute(f'SELECT notification_id FROM "{event_log.schema}".rm_dashboards_tracking').fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
            return row["notification_id"] if row else 0

    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: position() > 0, 30, "the runner to start")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    stopped_at = position()
    assert 0 < stopped_at < head, "the kill should land in the middle of the log"
    runner = ProjectionRunner(Dashboards(), event_log, batch_size=7, idle_wait=0.05).start()
    try:
        wait_caught_up(app, [Dashboards()])
    finally:
        runner.stop()
    assert assert_live_equals_rebuilt(app, Dashboards()) > 0


def test_two_runners_only_one_writes_and_the_other_takes_over(app: Any) -> None:
    _skill, credential = setup_catalog(app)
    event_log = EventLog.of(app)
    first = ProjectionRunner(TaskInbox(), event_log, idle_wait=0.05, standby_wait=0.1).start()
    _wait(lambda: first.is_leader, what="a leader")
    second = ProjectionRunner(TaskInbox(), event_log, idle_wait=0.05, standby_wait=0.1).start()
    try:
        for number in range(5):
            app.start_instance(learner(number), credential)
        wait_caught_up(app, [TaskInbox()])
        # the runner counts a batch just after committing its position: wait for the count
        _wait(lambda: first.handled >= 5, what="the leader to count its batch")
        assert first.is_leader and not second.is_leader
        assert (first.handled, second.handled) == (5, 0)

        first.stop()  # the leader dies: its session and lock go with it
        _wait(lambda: second.is_leader, what="the standby to take over")
        for number in range(5, 8):
            app.start_instance(learner(number), credential)
        wait_caught_up(app, [TaskInbox()])
        _wait(lambda: second.handled >= 3, what="the new leader to count its batch")
        assert second.handled == 3
    finally:
        first.stop()
        second.stop()
    assert assert_live_equals_rebuilt(app, TaskInbox()) == 8


def test_a_lost_connection_is_survived(app: Any) -> None:
    _skill, credential = setup_catalog(app)
    event_log = EventLog.of(app)
    runner = ProjectionRunner(TaskInbox(), event_log, idle_wait=0.05, standby_wait=0.1)
    runner.backoff.first = 0.05
    runner.start()
    try:
        _wait(lambda: runner.is_leader, what="a leader")
        app.start_instance(learner(1), credential)
        wait_caught_up(app, [TaskInbox()])
        for attempt in range(2):  # the database drops the runner's session, twice
            with event_log.connect("test-admin") as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (runner.backend_pid,))
            _wait(lambda n=attempt: runner.errors > n, what="the runner to notice")
            app.start_instance(learner(2 + attempt), credential)
            wait_caught_up(app, [TaskInbox()])
    finally:
        runner.stop()
    assert runner.errors >= 2
    assert assert_live_equals_rebuilt(app, TaskInbox()) == 3


def test_rebuild_switches_under_a_live_runner_without_losing_events(app: Any) -> None:
    from projections.rebuild import rebuild

    _skill, credential = setup_catalog(app)
    event_log = EventLog.of(app)
    live = ProjectionRunner(Dashboards(), event_log, batch_size=2, idle_wait=0.05)
    live.backoff.first = 0.01
    live.start()
    try:
        for number in range(6):
            app.start_instance(learner(number), credential)
        final = rebuild(event_log, Dashboards(), batch_size=3)
        assert final.phase == "switched" and final.position == final.head
        for number in range(6, 9):  # the live runner goes on, on the switched tables
            run_to_end(app, app.start_instance(learner(number), credential))
        wait_caught_up(app, [Dashboards()])
    finally:
        live.stop()
    assert assert_live_equals_rebuilt(app, Dashboards()) > 0
    with event_log.connect("test") as conn:
        tables = {row["tablename"] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (event_log.schema,))}
    assert not {t for t in tables if t.endswith("__new")}


PACE = 1.5  # seconds between batches under load, in the pacing tests


@contextmanager
def paced_runner_on_a_quiet_log(app: Any, projection: Projection) -> Iterator[ProjectionRunner]:
    """A leading runner with a ``PACE`` interval, caught up, after a pause longer than it."""
    runner = ProjectionRunner(projection, EventLog.of(app), idle_wait=5.0, batch_interval=PACE).start()
    try:
        _wait(lambda: runner.is_leader, what="a leader")
        wait_caught_up(app, [projection])
        time.sleep(PACE + 0.1)
        yield runner
    finally:
        runner.stop()


def test_a_busy_log_is_applied_in_paced_batches_and_a_quiet_one_at_once(app: Any) -> None:
    _skill, credential = setup_catalog(app)
    with paced_runner_on_a_quiet_log(app, TaskInbox()) as runner:
        began = time.monotonic()
        app.start_instance(learner(0), credential)
        _wait(lambda: runner.handled >= 1, what="the first event after a pause")
        assert time.monotonic() - began < 1.0, "a quiet log is applied at once, not an interval later"

        batches = runner.batches
        for number in range(1, 7):  # six commands, 0.1 s apart, well within one interval
            app.start_instance(learner(number), credential)
            time.sleep(0.1)
        wait_caught_up(app, [TaskInbox()])
        _wait(lambda: runner.handled >= 7, what="every task")
        assert runner.batches - batches <= 3, "events arriving faster than the interval share batches"
    assert assert_live_equals_rebuilt(app, TaskInbox()) == 7


def test_a_read_model_whose_events_are_not_arriving_follows_a_busy_log_in_paced_steps(app: Any) -> None:
    """The catalog reads none of the instance and task events, but moves its position with
    the log (so a wait_for on it is served). Under a stream of commands it must do so once
    per interval, not once per command; on a quiet log it still catches up at once."""
    _skill, credential = setup_catalog(app)
    with paced_runner_on_a_quiet_log(app, Catalog()) as runner:
        steps, handled = runner.steps, runner.handled
        began = time.monotonic()
        app.start_instance(learner(0), credential)
        head = app.recorder.max_notification_id()
        _wait(lambda: (runner.position or 0) >= head, what="the position after a pause")
        assert time.monotonic() - began < 1.0, "a quiet log is followed at once"

        began = time.monotonic()
        for number in range(1, 9):  # eight commands, 0.1 s apart
            app.start_instance(learner(number), credential)
            time.sleep(0.1)
        head = app.recorder.max_notification_id()
        _wait(lambda: (runner.position or 0) >= head, what="the log's head")
        # One step at once, then at most one per interval; unpaced, one per command (nine).
        allowed = min(8, 2 + int((time.monotonic() - began) / PACE))
        assert runner.steps - steps <= allowed, f"{runner.steps - steps} steps for nine commands: not paced"
        assert runner.handled == handled  # none of these events is the catalog's
