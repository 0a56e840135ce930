"""Lists that wait for a log position, and readiness, run on threads of their own: however
many lists wait, a command still gets a thread at once, and however long commands are stuck
(a database that is down), readiness still answers (interface/http/services.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec
import pytest

from domain.identity import Actor
from interface.examples import load_example_catalog
from interface.http.testing import ADMIN, LEARNER, api_client, auth

pytestmark = pytest.mark.integration

CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"


def test_lists_waiting_for_the_log_do_not_hold_up_commands(app: Any, settings: Any, schema_database: Any) -> None:
    load_example_catalog(app)
    # one command thread, two read threads; no projections, so a list that waits for a
    # position waits out its whole bound (5 s) for read models that never come
    settings = msgspec.structs.replace(settings, http_command_threads=1, database_pool_size=2)
    head = app.recorder.max_notification_id()
    with api_client(settings, app, schema_database) as client:
        waited: list[tuple[int, float]] = []

        def wait_on_a_list() -> None:
            began = time.monotonic()
            answer = client.get("/instances", params={"wait_for": head}, headers=auth(settings, *ADMIN))
            waited.append((answer.status_code, time.monotonic() - began))

        lists = [threading.Thread(target=wait_on_a_list) for _ in range(3)]
        for thread in lists:
            thread.start()
        time.sleep(0.5)  # the three lists hold both read threads (and one waits for a thread)
        began = time.monotonic()
        started = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=auth(settings, *LEARNER))
        took = time.monotonic() - began
        for thread in lists:
            thread.join(30)
    assert started.status_code == 201, started.text
    assert took < 2.0, f"the command waited {took:.1f} s behind lists"
    assert len(waited) == 3 and all(status == 503 and seconds > 4 for status, seconds in waited), waited


def test_readiness_answers_while_every_command_thread_is_stuck(
    app: Any, settings: Any, schema_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_example_catalog(app)
    settings = msgspec.structs.replace(settings, http_command_threads=1)
    started = app.start_instance(Actor.of(LEARNER[0]), CREDENTIAL)
    task = app.get_instance(started).open_tasks[0]
    release = threading.Event()

    def stuck(*_args: Any, **_kwargs: Any) -> None:  # a command waiting on a database that is down
        release.wait(10)

    monkeypatch.setattr(app, "claim_task", stuck)
    with api_client(settings, app, schema_database) as client:
        command = threading.Thread(target=client.post, args=(f"/tasks/{task}/claim",),
                                   kwargs={"headers": auth(settings, *LEARNER)})
        command.start()
        time.sleep(0.3)  # the one command thread is held
        began = time.monotonic()
        ready = client.get("/ready")
        took = time.monotonic() - began
        release.set()
        command.join(10)
    assert ready.status_code == 200, ready.text
    assert took < 2.0, f"readiness waited {took:.1f} s behind a stuck command"


def test_the_command_threads_setting_is_checked(app: Any, settings: Any, schema_database: Any) -> None:
    settings = msgspec.structs.replace(settings, http_command_threads=0)
    with pytest.raises(ValueError, match="HTTP_COMMAND_THREADS must be at least 1, got 0"), \
            api_client(settings, app, schema_database):
        pass


def test_readiness_answers_while_keyed_commands_hold_every_connection_of_the_api_pool(
    app: Any, settings: Any, schema_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyed command holds a connection of the API's pool (its idempotency record) for as
    long as it runs: readiness must not wait for one, or load would take the replica out."""
    load_example_catalog(app)
    settings = msgspec.structs.replace(settings, http_command_threads=2, database_pool_size=2)
    task = app.get_instance(app.start_instance(Actor.of(LEARNER[0]), CREDENTIAL)).open_tasks[0]
    release = threading.Event()

    def stuck(*_args: Any, **_kwargs: Any) -> None:  # a slow command, its idempotency key held
        release.wait(10)

    monkeypatch.setattr(app, "claim_task", stuck)
    with api_client(settings, app, schema_database) as client:
        commands = [threading.Thread(target=client.post, args=(f"/tasks/{task}/claim",),
                                     kwargs={"headers": {**auth(settings, *LEARNER), "Idempotency-Key": f"k-{n}"}})
                    for n in range(2)]
        for command in commands:
            command.start()
        time.sleep(0.5)  # both commands hold a connection of the pool of two
        began = time.monotonic()
        ready = client.get("/ready")
        took = time.monotonic() - began
        release.set()
        for command in commands:
            command.join(10)
    assert ready.status_code == 200, ready.text
    assert took < 1.0, f"readiness waited {took:.1f} s for a connection of the API's pool"
