"""Two replicas on one schema, each a ``serve`` process (which runs the read-model
projections and the Kafka relay too), started at the same moment. Under concurrent load spread over both: no duplicated
task, no lost update (every contended claim and completion has exactly one winner), one
holder per projection lock and one relay. Then, twice, the replica holding the relay
dies (kill -9): the other takes over every lock and serves on, the dead one comes back as
a standby; the read models and the topic resume with no gap."""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import psutil
import psycopg
import pytest

from domain.task import COMPLETED, OPEN
from interface.kafka.leadership import lock_key as relay_lock_key
from interface.kafka.relay import relay_position
from projections.follow import lock_key as projection_lock_key
from projections.registry import PROJECTIONS
from tests.reliability.checks import (
    aggregates, expected_cloudevent_ids, published_ids, read_models_differ_from_rebuild, service_on,
    unexplained_tasks, wait_for_projections,
)
from tests.reliability.conftest import CREDENTIAL, bearer, deploy_quick, free_port, service_env, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

TOPIC = "skillbase.workflow.replicas"
LEARNERS = 60
ASSESSORS = [bearer(f"assessor-{n}", ["assessor"]) for n in range(4)]


def holders(database: Any, children: dict[str, Any]) -> dict[str, list[str]]:
    """lock -> names of the child processes whose PostgreSQL sessions hold it (matched by
    the client port of each session)."""
    keys = {f"projection/{name}": projection_lock_key(database.schema, f"projection/{name}") for name in PROJECTIONS}
    keys["relay"] = relay_lock_key(database.schema, "relay", TOPIC)
    ports: dict[int, str] = {}
    for name, child in children.items():
        if child.process.poll() is None:
            for connection in psutil.Process(child.process.pid).net_connections("tcp"):
                if connection.raddr and connection.raddr.port == database.port:
                    ports[connection.laddr.port] = name
    found: dict[str, list[str]] = {}
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        for lock, key in keys.items():
            unsigned = key & 0xFFFFFFFFFFFFFFFF
            rows = conn.execute(
                "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (unsigned >> 32, unsigned & 0xFFFFFFFF),
            ).fetchall()
            found[lock] = [ports.get(port, f"unknown:{port}") for (port,) in rows]
    return found


def all_held(database: Any, children: dict[str, Any]) -> dict[str, list[str]] | None:
    """Every lock held by exactly one session, of a live child (the session of a killed
    process may hold its lock for a moment, until its backend sees the socket closed)."""
    found = holders(database, children)
    return found if all(len(names) == 1 and names[0] in children for names in found.values()) else None


def test_two_replicas_share_the_work_and_fail_over(schema_database, tmp_path, children, kafka_broker,
                                                    record) -> None:
    processes: dict[str, Any] = {}
    urls = {}
    for replica in ("a", "b"):
        port = free_port()
        env = service_env(schema_database, tmp_path / replica, port,
                          SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
                          SKILLBASE_WORKFLOW_KAFKA_ENABLE_IDEMPOTENCE="false",
                          SKILLBASE_WORKFLOW_KAFKA_OUTPUT_TOPIC=TOPIC,
                          SKILLBASE_WORKFLOW_KAFKA_CATALOG_TOPICS=f"{TOPIC}.catalog",
                          SKILLBASE_WORKFLOW_KAFKA_CONSUMER_GROUP=f"replicas-{schema_database.schema}")
        (tmp_path / replica).mkdir()
        processes[f"serve-{replica}"] = children(["serve"], env, port)
        urls[replica] = f"http://127.0.0.1:{port}"
    for child in processes.values():  # both at once, on an empty schema
        child.start(wait=False)
    for replica in ("a", "b"):
        processes[f"serve-{replica}"].wait_ready(60)

    clients = {r: httpx.Client(base_url=url, timeout=30) for r, url in urls.items()}
    try:
        deploy_quick(clients["a"])
        replica_of = itertools.cycle("ab")
        lock = threading.Lock()
        claims: dict[str, Counter[int]] = {}
        completes: dict[str, Counter[int]] = {}
        winners: dict[str, list[int]] = {}

        def learner(n: int, via: list[str]) -> str:
            headers = bearer(f"learner-{n:03d}")
            started = clients[via[0]].post("/instances", json={"credential_id": CREDENTIAL}, headers=headers)
            assert started.status_code == 201, started.text
            task = started.json()["open_task_ids"][0]
            done = clients[via[1]].post(f"/tasks/{task}/complete", json={"data": {"note": "x"}}, headers=headers)
            assert done.status_code == 200, done.text
            return started.json()["id"]

        def claim(task: str, n: int) -> None:
            status = clients["ab"[n % 2]].post(f"/tasks/{task}/claim", headers=ASSESSORS[n]).status_code
            with lock:
                claims.setdefault(task, Counter())[status] += 1
                if status == 200:
                    winners.setdefault(task, []).append(n)

        def complete(task: str, n: int, replica: str) -> None:
            status = clients[replica].post(f"/tasks/{task}/complete", json={"data": {}},
                                           headers=ASSESSORS[n]).status_code
            with lock:
                completes.setdefault(task, Counter())[status] += 1

        with ThreadPoolExecutor(12) as pool:
            instance_ids = list(pool.map(lambda n: learner(n, [next(replica_of), next(replica_of)]), range(LEARNERS)))
        with service_on(schema_database) as app:
            _, tasks = aggregates(app)
        reviews = [str(t.id) for t in tasks.values() if t.status == OPEN and t.candidate_group == "assessor"]
        assert len(reviews) == LEARNERS
        # Four assessors claim every review task at once, through both replicas...
        attempts = [(task, n) for task in reviews for n in range(len(ASSESSORS))]
        random.shuffle(attempts)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda a: claim(*a), attempts))
        # ...and each winner completes it twice at once, once through each replica.
        finals = [(task, ns[0], r) for task, ns in winners.items() if len(ns) == 1 for r in "ab"]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda a: complete(*a), finals))

        # Two rounds: kill -9 the replica holding the relay; the other must take every lock
        # and serve; bring the dead one back (it stands by); then kill the new holder.
        rounds, later, next_learner = [], [], LEARNERS
        for _ in range(2):
            leaders = wait_until(lambda: all_held(schema_database, processes), 60, 0.2, "every lock held once")
            victim = leaders["relay"][0].split("-")[1]
            survivor = "b" if victim == "a" else "a"
            for name, child in processes.items():
                if name.endswith(victim):
                    child.kill()
            after = wait_until(lambda: all_held(schema_database, processes), 60, 0.2, "locks taken over")
            rounds.append({"killed": f"serve-{victim}",
                           "before": {k: v[0] for k, v in leaders.items()},
                           "after": {k: v[0] for k, v in after.items()}})
            assert all(name.endswith(survivor) for names in after.values() for name in names), (victim, leaders, after)
            with ThreadPoolExecutor(8) as pool:
                later += list(pool.map(lambda n: learner(n, [survivor, survivor]),
                                       range(next_learner, next_learner + 10)))
            next_learner += 10
            for name, child in processes.items():
                if name.endswith(victim):
                    child.start()

        with service_on(schema_database) as app:
            instances, tasks = aggregates(app)
            head = wait_for_projections(app)
            differences = read_models_differ_from_rebuild(app)
            wait_until(lambda: relay_position(app, TOPIC) >= head, 60, 0.2, "relay caught up")
            expected = expected_cloudevent_ids(app)
            seen = published_ids(kafka_broker.bootstrap_servers, TOPIC, set(expected))
    finally:
        for client in clients.values():
            client.close()

    per_instance = Counter((t.instance_id, t.element_id) for t in tasks.values())
    duplicated_tasks = [key for key, n in per_instance.items() if n > 1]
    bad_claims = {t: c for t, c in claims.items() if c[200] != 1}
    bad_completes = {t: c for t, c in completes.items() if c[200] != 1}
    wrong_completer = [t for t, ns in winners.items()
                       if tasks[UUID(t)].status != COMPLETED or tasks[UUID(t)].completed_by != f"assessor-{ns[0]}"]
    gaps = set(expected) - seen.keys()
    record("replicas", replicas=2, learners=LEARNERS + 20,
           contended_claims=sum(sum(c.values()) for c in claims.values()),
           claims_won=sum(c[200] for c in claims.values()), claims_refused_409=sum(c[409] for c in claims.values()),
           contended_completions=sum(sum(c.values()) for c in completes.values()),
           completions_won=sum(c[200] for c in completes.values()),
           duplicated_tasks=len(duplicated_tasks), lost_updates=len(wrong_completer),
           failovers=rounds, kills=2,
           unexplained_task_states=len(unexplained_tasks(instances, tasks)), stored_events=len(expected),
           read_model_rows_differing_from_rebuild=sum(differences.values()), kafka_events_missing=len(gaps),
           kafka_events_resent=sum(n - 1 for n in seen.values()))
    assert len(set(instance_ids + later)) == LEARNERS + 20 == len(instances)
    assert not duplicated_tasks, duplicated_tasks
    assert not bad_claims, bad_claims
    assert not bad_completes, bad_completes
    assert not wrong_completer, wrong_completer
    assert not unexplained_tasks(instances, tasks)
    assert not any(differences.values()), differences
    assert not gaps, f"{len(gaps)} stored events never published"
