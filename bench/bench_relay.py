"""Kafka relay benchmark: throughput from the event store to acknowledged broker writes, and
end-to-end lag under a sustained command load.

    .venv/bin/python bench/bench_relay.py [--events 20000] [--learners 60] [--rate 500] [--seconds 20]
                                          [--threads 8] [--repeat 3] [--batch-size 2000]

Needs PostgreSQL at 127.0.0.1:5432 (database ``test``, a fresh schema per run) and starts the
same Tansu broker the tests use. Prints medians of ``--repeat`` runs and the ratio to a
baseline measured in the same run: raw aiokafka produce of the very same records (already
encoded, same batch size and producer settings), i.e. the broker + client ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec
import psycopg
from aiokafka import AIOKafkaProducer

from application.bootstrap import bootstrap, open_file_store
from application.contract import EntityStates
from application.database import Database, ensure_database
from application.settings import Settings, load_settings
from domain.deployment import ACTIVE, WorkflowDeployment
from domain.identity import Actor
from interface.kafka.client_config import producer_config
from interface.kafka.relay import (
    PRODUCER_DEFAULTS,
    Relay,
    RelayOptions,
    relay_lag,
    relay_name,
)
from tests.fixtures.kafka import TansuBroker, free_port, tansu_binary


def make_settings(schema: str, broker: TansuBroker, topic: str, data_dir: str) -> Settings:
    return load_settings(
        {}, data_dir=data_dir, database_host="127.0.0.1", database_name="test", database_schema=schema,
        kafka_bootstrap_servers=broker.bootstrap_servers, kafka_enable_idempotence=False,
        kafka_output_topic=topic,
    )


def database_of(settings: Settings) -> Database:
    return Database(host=settings.database_host, port=settings.database_port, name=settings.database_name,
                    user=settings.database_user, password="", schema=settings.database_schema)


# -- data ----------------------------------------------------------------------------------


def store_catalog_events(app: Any, count: int, per_entity: int = 100) -> None:
    """``count`` small events: deployments with ``per_entity`` catalog updates each."""
    for start in range(0, count, per_entity):
        deployment = WorkflowDeployment(skill_id=f"bench-{uuid.uuid4()}", name="skill", description="",
                                        status=ACTIVE, catalog_version=1)
        for version in range(2, min(per_entity, count - start) + 1):
            deployment.update_from_catalog(name=f"skill v{version}", description="", status=ACTIVE,
                                           catalog_version=version)
        app.save_all(deployment)


def store_process_events(app: Any, settings: Settings, learners: int) -> None:
    """The example credential run to pass / fail: instance, task, definition events."""
    from interface.commands.demo import _run_learner
    from interface.examples import load_example_catalog

    files = open_file_store(settings)
    _skill, credential = load_example_catalog(app)
    assessor = Actor.of("assessor-ada", "assessor", email="ada@example.org")
    for n in range(learners):
        learner = Actor.of(f"learner-{n}", email=f"l{n}@example.org")
        _run_learner(app, files, learner, assessor, credential, 85 if n % 2 else 40)


# -- throughput ----------------------------------------------------------------------------


# The relay no longer ends on an event it cannot publish (it holds there and retries), so
# a benchmark checks its failures itself, and gives up after this long.
RELAY_DEADLINE_SECONDS = 600.0


def _check_not_stuck(relay: Relay, deadline: float) -> None:
    if relay.stats.failures:
        raise RuntimeError(f"the relay failed during the benchmark: {relay.stats.last_error}")
    if time.perf_counter() > deadline:
        raise RuntimeError(f"the relay did not catch up within {RELAY_DEADLINE_SECONDS:.0f} s")


async def relay_throughput(app: Any, settings: Settings, options: RelayOptions) -> float:
    """Seconds for a fresh relay to publish the whole log (position 0 -> head, all acked)."""
    head = app.recorder.max_notification_id()
    stop = asyncio.Event()
    relay = Relay(app, settings, options)
    began = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))
    deadline = began + RELAY_DEADLINE_SECONDS
    while relay.stats.position < head:
        await asyncio.sleep(0.002)
        if task.done():
            task.result()
        _check_not_stuck(relay, deadline)
    elapsed = time.perf_counter() - began
    stop.set()
    await task
    return elapsed


async def baseline_throughput(records: list[Any], settings: Settings, batch_size: int) -> float:
    """Seconds for raw aiokafka to produce the same encoded records in the same batches."""
    producer = AIOKafkaProducer(**{**producer_config(settings), **PRODUCER_DEFAULTS})
    began = time.perf_counter()
    await producer.start()
    try:
        for start in range(0, len(records), batch_size):
            futures = [await producer.send(settings.kafka_output_topic, r.value, key=r.key, headers=r.headers)
                       for r in records[start:start + batch_size]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def reset_position(app: Any, settings: Settings) -> None:
    with psycopg.connect(database_of(settings).conninfo(), autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                psycopg.sql.Identifier(settings.database_schema),
                psycopg.sql.Identifier(app.recorder.tracking_table_name)),
            (relay_name(settings.kafka_output_topic),),
        )


def measure_throughput(label: str, app: Any, settings: Settings, broker: TansuBroker, repeat: int,
                       options: RelayOptions) -> dict[str, Any]:
    events = app.recorder.max_notification_id()
    all_records = Relay(app, settings, options)
    records = []
    states = EntityStates(app.repository)
    position = 0
    while True:
        batch = all_records.read_batch(position, states)
        if not batch:
            break
        records.extend(batch)
        position = batch[-1].notification_id
    relay_runs, base_runs = [], []
    for _ in range(repeat):
        topic = broker.new_topic("bench-relay")
        run_settings = msgspec.structs.replace(settings, kafka_output_topic=topic)
        reset_position(app, run_settings)
        relay_runs.append(asyncio.run(relay_throughput(app, run_settings, options)))
        base_topic = broker.new_topic("bench-base")
        base_runs.append(asyncio.run(baseline_throughput(
            records, msgspec.structs.replace(settings, kafka_output_topic=base_topic), options.batch_size)))
    relay_rate = events / statistics.median(relay_runs)
    base_rate = events / statistics.median(base_runs)
    mean_bytes = statistics.mean(len(r.value) for r in records)
    print(f"{label}: {events} events ({mean_bytes:.0f} B mean record), relay median "
          f"{relay_rate:,.0f} events/s (runs {', '.join(f'{events / s:,.0f}' for s in relay_runs)}); "
          f"raw aiokafka {base_rate:,.0f} events/s; ratio {relay_rate / base_rate:.2f}")
    return {"events": events, "relay": relay_rate, "baseline": base_rate, "bytes": mean_bytes}


# -- lag under load ------------------------------------------------------------------------


def _command_load(settings_json: bytes, rate: int, seconds: float, ready: Any, results: Any, threads: int,
                  per_command: int = 1) -> None:
    """A separate process (like another replica) issuing ``rate`` one-event commands per
    second from ``threads`` threads; reports when each command's event was committed."""
    import threading

    from domain.ids import deployment_id

    settings = msgspec.json.decode(settings_json, type=Settings)
    app = bootstrap(settings)
    committed: dict[str, float] = {}
    ready.wait()
    began = time.perf_counter()

    def worker(index: int) -> None:
        skills = [f"load-{uuid.uuid4()}" for _ in range(20)]
        versions = dict.fromkeys(skills, 0)
        commands = rate / per_command
        for n in range(int(commands * seconds / threads)):
            due = began + (n * threads + index) / commands
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            skill = skills[n % len(skills)]
            if per_command == 1:
                versions[skill] += 1
                app.upsert_skill(skill_id=skill, version=versions[skill], name=f"v{versions[skill]}",
                                 description="", status=ACTIVE)
                committed[f"{deployment_id(skill)}/{versions[skill]}"] = time.time()
            else:  # one command storing several events in one transaction
                deployment = WorkflowDeployment(skill_id=f"load-{uuid.uuid4()}", name="s", description="",
                                                status=ACTIVE, catalog_version=1)
                for version in range(2, per_command + 1):
                    deployment.update_from_catalog(name=f"v{version}", description="", status=ACTIVE,
                                                   catalog_version=version)
                app.save_all(deployment)
                done = time.time()
                committed.update({f"{deployment.id}/{v}": done for v in range(1, per_command + 1)})

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    results.put((committed, time.perf_counter() - began))
    app.close()


async def measure_lag(app: Any, settings: Settings, rate: int, seconds: float, options: RelayOptions,
                      threads: int = 4, per_command: int = 1) -> dict:
    """Lag = broker acknowledgement time - the time the command that stored the event returned."""
    topic = settings.kafka_output_topic
    stop = asyncio.Event()
    acked: dict[str, float] = {}

    def on_published(batch: Any) -> None:
        now = time.time()
        for record in batch:
            acked[f"{record.key.decode()}/{json.loads(record.value)['data']['state']['version']}"] = now

    relay = Relay(app, settings, options, on_published=on_published)
    relay_task = asyncio.create_task(relay.run(stop))
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    load = context.Process(target=_command_load,
                           args=(msgspec.json.encode(settings), rate, seconds, ready, results, threads, per_command))
    load.start()
    await asyncio.sleep(3)  # the load process imports and connects before the clock starts
    ready.set()
    backlog: list[int] = []
    while load.is_alive() and results.empty():
        backlog.append(await asyncio.to_thread(relay_lag, app, topic))
        await asyncio.sleep(0.1)
    committed, load_seconds = await asyncio.to_thread(results.get)
    load.join()
    deadline = time.perf_counter() + RELAY_DEADLINE_SECONDS
    while relay_lag(app, topic):
        await asyncio.sleep(0.05)
        _check_not_stuck(relay, deadline)
    stop.set()
    await relay_task
    lags = sorted(acked[key] - at for key, at in committed.items())
    result = {
        "events": len(committed), "achieved_rate": len(committed) / load_seconds,
        "median": statistics.median(lags), "p95": lags[int(0.95 * (len(lags) - 1))],
        "p99": lags[int(0.99 * (len(lags) - 1))], "max": lags[-1], "max_backlog": max(backlog or [0]),
    }
    print(f"lag under load: {len(committed)} events at {result['achieved_rate']:.0f} events/s achieved "
          f"({rate} asked, {per_command} per command, {threads} threads, {load_seconds:.1f} s); command returned -> broker acknowledged: "
          f"median {result['median'] * 1000:.0f} ms, p95 {result['p95'] * 1000:.0f} ms, "
          f"p99 {result['p99'] * 1000:.0f} ms, max {result['max'] * 1000:.0f} ms; "
          f"relay backlog sampled every 0.1 s: max {result['max_backlog']} events")
    return result


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--learners", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=8, help="command threads of the load process")
    parser.add_argument("--events-per-command", type=int, default=1)
    parser.add_argument("--lag-only", action="store_true")
    parser.add_argument("--batch-size", type=int, default=RelayOptions.batch_size)
    args = parser.parse_args()
    options = RelayOptions(batch_size=args.batch_size)

    import os

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    workdir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    broker = TansuBroker(tansu_binary(), free_port(), workdir / "tansu.log")
    broker.start()
    schemas = []
    try:
        for label, fill in () if args.lag_only else (
            ("catalog events", lambda app, s: store_catalog_events(app, args.events)),
            ("process events", lambda app, s: store_process_events(app, s, args.learners)),
        ):
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            schemas.append(schema)
            settings = make_settings(schema, broker, "unused", str(workdir / schema))
            ensure_database(database_of(settings))
            app = bootstrap(settings, database=database_of(settings))
            began = time.perf_counter()
            fill(app, settings)
            print(f"{label}: stored {app.recorder.max_notification_id()} events in "
                  f"{time.perf_counter() - began:.1f} s")
            measure_throughput(label, app, settings, broker, args.repeat, options)
            app.close()

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        schemas.append(schema)
        settings = make_settings(schema, broker, broker.new_topic("bench-lag"), str(workdir / schema))
        ensure_database(database_of(settings))
        app = bootstrap(settings, database=database_of(settings))
        asyncio.run(measure_lag(app, settings, args.rate, args.seconds, options, args.threads,
                                args.events_per_command))
        app.close()
    finally:
        broker.close()
        with psycopg.connect(database_of(make_settings("x", broker, "x", "x")).conninfo(), autocommit=True) as c:
            for schema in schemas:
                c.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
        shutil.rmtree(workdir, ignore_errors=True)  # the broker's log and the runs' data directories
    return 0


if __name__ == "__main__":
    sys.exit(main())
