"""kill -9 in the middle of a burst: the real service (``serve``, which runs the API, the
read-model projections and the Kafka relay) dies while 200 learners start and complete
concurrently. After a restart every acknowledged command is in the
store, every task state follows from the events, the read models equal a rebuild from
zero, and every stored event is on the Kafka topic."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.task import COMPLETED
from interface.kafka.relay import relay_position
from tests.reliability.checks import (
    Tally, aggregates, expected_cloudevent_ids, published_ids, read_models_differ_from_rebuild,
    service_on, unexplained_tasks, wait_for_projections,
)
from tests.reliability.conftest import CREDENTIAL, bearer, deploy_quick, free_port, service_env, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

LEARNERS = 200
WORKERS = 16
KILL_AFTER = 140  # acknowledged commands (of 400) before kill -9
TOPIC = "skillbase.workflow.crash"


@dataclass
class Journey:
    """One learner: start (key ``start``) then complete the first task (key ``complete``)."""

    user: str
    instance: str | None = None
    task: str | None = None
    started: bool = False  # a 2xx was received
    completed: bool = False
    unanswered: str | None = None  # the command that got no response


def drive(client: httpx.Client, journey: Journey, tally: Tally, lock: threading.Lock) -> None:
    headers = bearer(journey.user)
    steps = []
    if not journey.started:
        steps.append("start")
    if not journey.completed:
        steps.append("complete")
    for step in steps:
        with lock:
            tally.sent += 1
        try:
            if step == "start":
                response = client.post("/instances", json={"credential_id": CREDENTIAL},
                                       headers={**headers, "Idempotency-Key": f"start-{journey.user}"})
            else:
                response = client.post(f"/tasks/{journey.task}/complete", json={"data": {"note": "done"}},
                                       headers={**headers, "Idempotency-Key": f"complete-{journey.user}"})
        except httpx.TransportError as error:
            with lock:
                if isinstance(error, httpx.ConnectError):
                    tally.not_connected += 1
                else:
                    tally.unanswered += 1
            journey.unanswered = step
            return
        if not 200 <= response.status_code < 300:
            with lock:
                tally.refused[response.status_code] += 1
            journey.unanswered = step
            return
        with lock:
            tally.acknowledged += 1
        journey.unanswered = None
        if step == "start":
            body = response.json()
            journey.instance, journey.task, journey.started = body["id"], body["open_task_ids"][0], True
        else:
            journey.completed = True


def burst(url: str, journeys: list[Journey], tally: Tally, on_ack: Any = None) -> None:
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30, connect=5), limits=limits) as client:
        with ThreadPoolExecutor(WORKERS) as pool:
            for future in [pool.submit(drive, client, journey, tally, lock) for journey in journeys]:
                future.result(timeout=120)


def test_kill_9_mid_burst_loses_nothing(schema_database, tmp_path, children, kafka_broker, record) -> None:
    port = free_port()
    env = service_env(schema_database, tmp_path, port,
                      SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
                      SKILLBASE_WORKFLOW_KAFKA_ENABLE_IDEMPOTENCE="false",
                      SKILLBASE_WORKFLOW_KAFKA_OUTPUT_TOPIC=TOPIC,
                      SKILLBASE_WORKFLOW_KAFKA_CATALOG_TOPICS=f"{TOPIC}.catalog",
                      SKILLBASE_WORKFLOW_KAFKA_CONSUMER_GROUP=f"crash-{schema_database.schema}")
    serve = children(["serve"], env, port).start()  # it runs the projections and the relay too
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        deploy_quick(client)

    journeys = [Journey(f"learner-{i:03d}") for i in range(LEARNERS)]
    tally = Tally()

    def killer() -> None:
        wait_until(lambda: tally.acknowledged >= KILL_AFTER, 120, 0.005, "enough acknowledgements")
        serve.kill()

    assassin = threading.Thread(target=killer, daemon=True)
    assassin.start()
    burst(serve.url, journeys, tally)
    assassin.join(10)
    killed_at = tally.figures()
    assert tally.unanswered > 0, "the kill came too late to hit commands in flight"

    serve.start()
    retry = Tally()
    burst(serve.url, [j for j in journeys if not j.completed], retry)  # the same Idempotency-Keys
    assert retry.unanswered == retry.not_connected == 0 and not retry.refused, retry.figures()

    with service_on(schema_database) as app:
        instances, tasks = aggregates(app)
        missing = []
        for journey in journeys:
            instance = instances.get(UUID(journey.instance)) if journey.instance else None
            task = tasks.get(UUID(journey.task)) if journey.task else None
            if journey.started and (instance is None or instance.user_id != journey.user):
                missing.append(f"start of {journey.user}")
            if journey.completed and (task is None or task.status != COMPLETED):
                missing.append(f"completion of {journey.user}")
        starts_per_user: dict[str, int] = {}
        for instance in instances.values():
            starts_per_user[instance.user_id] = starts_per_user.get(instance.user_id, 0) + 1
        duplicated = {user: n for user, n in starts_per_user.items() if n > 1}
        unexplained = unexplained_tasks(instances, tasks)

        head = wait_for_projections(app)
        differences = read_models_differ_from_rebuild(app)
        wait_until(lambda: relay_position(app, TOPIC) >= head, 60, 0.2, "relay caught up")
        expected = expected_cloudevent_ids(app)
        seen = published_ids(kafka_broker.bootstrap_servers, TOPIC, set(expected))

    gaps = sorted(set(expected) - seen.keys())
    resent = sum(count - 1 for count in seen.values())
    record("crashes", fault="kill -9 of serve (API, projections, relay) mid-burst", kills=1,
           commands_before_kill=killed_at, commands_after_restart=retry.figures(),
           acknowledged_total=tally.acknowledged + retry.acknowledged,
           acknowledged_missing_from_store=len(missing), duplicated_instances=len(duplicated),
           instances=len(instances), tasks=len(tasks), unexplained_task_states=len(unexplained),
           stored_events=len(expected), read_model_rows_differing_from_rebuild=sum(differences.values()),
           kafka_events_missing=len(gaps), kafka_events_resent=resent)
    assert not missing, missing[:10]
    assert not duplicated, duplicated
    assert all(j.completed for j in journeys)
    assert len(instances) == LEARNERS
    assert not unexplained, unexplained[:10]
    assert not any(differences.values()), differences
    assert not gaps, f"{len(gaps)} stored events never published, e.g. {gaps[:3]}"
