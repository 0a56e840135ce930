"""Read-model benchmark: rebuild speed next to merely reading and decoding the same log,
and the task inbox under load.

    python bench/bench_projections.py --tasks 1000000     # the figure the issue asks for
    python bench/bench_projections.py --tasks 20000       # a quick run

It creates a fresh schema, generates ``--tasks`` task aggregates through the real domain
(``WorkflowTask`` created, a share claimed and completed) saved with ``save_all`` in large
batches, then, in the same run:

1. reads and decodes the inbox's events (same topics, same batch size, same mapper): events/s;
2. rebuilds the inbox and the dashboards from zero with the real projection code: events/s,
   and the ratio to (1);
3. times "my groups' open tasks, first page" (three of 50 groups, 50 rows) ``--queries``
   times: median and p99 in ms, and prints the EXPLAIN ANALYZE plan.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from application.bootstrap import bootstrap
from application.database import Database, ensure_database
from application.queries import inbox
from application.queries.store import ReadStore
from application.settings import load_settings
from domain.identity import Actor
from domain.task import WorkflowTask
from projections.dashboards import Dashboards
from projections.inbox import TaskInbox
from projections.log import EventLog
from projections.rebuild import rebuild

GROUPS = [f"group-{n:02d}" for n in range(50)]


def generate(app: Any, tasks: int, batch: int, completed_share: float, seed: int) -> int:
    rng = random.Random(seed)
    made = 0
    started = time.perf_counter()
    while made < tasks:
        aggregates = []
        for _ in range(min(batch, tasks - made)):
            group = rng.choice(GROUPS)
            task = WorkflowTask(
                id=uuid.uuid4(), instance_id=uuid.uuid4(), learner_id=f"learner-{rng.randrange(100_000)}",
                credential_id=f"credential-{rng.randrange(200)}", skill_id=f"skill-{rng.randrange(40)}",
                engine_task_id="assess", element_id="assess_evidence", name="Assess evidence", kind="user",
                candidate_group=group, assignee=None, form="assess-evidence.schema.json", documentation="",
                due_at=None,
            )
            if rng.random() < completed_share:
                worker = Actor.of(f"assessor-{rng.randrange(500)}", group)
                task.claim(worker)
                task.complete(worker, {"score": 80, "feedback": "ok"})
            aggregates.append(task)
        app.save_all(*aggregates)
        made += len(aggregates)
        rate = made / (time.perf_counter() - started)
        print(f"\rgenerating tasks: {made:,}/{tasks:,} ({rate:,.0f} tasks/s)", end="", flush=True)
    print()
    return app.recorder.max_notification_id() or 0


def read_and_decode(event_log: EventLog, topics: list[str], batch: int) -> tuple[int, float]:
    events, position = 0, 0
    started = time.perf_counter()
    with event_log.connect("bench-read") as conn, conn.cursor() as cur:
        while True:
            stored, ids, _head = event_log.read(cur, position, topics, batch)
            event_log.decode(stored)
            events += len(ids)
            if len(ids) < batch:
                break
            position = ids[-1]
    return events, time.perf_counter() - started


def timed_rebuild(event_log: EventLog, projection: Any, batch: int) -> dict[str, float]:
    marks: dict[str, Any] = {}

    def progress(p: Any) -> None:
        marks.setdefault(p.phase, p)
        marks[p.phase] = p
        if p.phase == "replay":
            print(f"\rrebuild {p.name}: {p.position:,}/{p.head:,}  {p.events_per_second:,.0f} events/s",
                  end="", flush=True)

    final = rebuild(event_log, projection, batch_size=batch, progress=progress)
    print()
    replay = marks["replay"]
    return {"events": final.events, "replay_seconds": replay.seconds, "total_seconds": final.seconds,
            "replay_rate": replay.events / replay.seconds, "total_rate": final.events / final.seconds}


def inbox_latency(app: Any, queries: int, seed: int) -> tuple[list[float], str]:
    store = ReadStore.of(app)
    rng = random.Random(seed)
    samples = []
    for _ in range(queries):
        groups = rng.sample(GROUPS, 3)
        started = time.perf_counter()
        page = inbox.group_tasks(store, groups, limit=50)
        samples.append((time.perf_counter() - started) * 1000)
        assert page.items
    query, params = inbox.inbox_query(store, None, rng.sample(GROUPS, 3), unclaimed_only=False, limit=50,
                                      start=None)
    with store.cursor() as cur:
        cur.execute(psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + query, params)
        plan = "\n".join(row["QUERY PLAN"] for row in cur.fetchall())
        cur.execute(psycopg.sql.SQL("SELECT count(*) AS n, count(*) FILTER (WHERE status = 'open') AS open "
                                    "FROM {}").format(store.table("rm_tasks")))
        counts = cur.fetchone()
    print(f"inbox rows: {counts['n']:,} ({counts['open']:,} open)")
    return samples, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--save-batch", type=int, default=5_000)
    parser.add_argument("--rebuild-batch", type=int, default=5_000)
    parser.add_argument("--completed-share", type=float, default=0.2)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--database", default="test")
    parser.add_argument("--schema", default="", help="reuse a generated schema (skips generation)")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    schema = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
    database = Database(host=args.host, port=args.port, name=args.database, user="postgres", password="",
                        schema=schema)
    ensure_database(database)
    settings = load_settings({}, database_host=args.host, database_port=args.port,
                             database_name=args.database, database_schema=schema)
    app = bootstrap(settings, database=database)
    try:
        head = app.recorder.max_notification_id() or 0
        if not args.schema or head == 0:
            head = generate(app, args.tasks, args.save_batch, args.completed_share, args.seed)
        print(f"log: {head:,} events in schema {schema}")
        event_log = EventLog.of(app)
        results = {}
        for projection in (TaskInbox(), Dashboards()):
            events, seconds = read_and_decode(event_log, projection.topics(), args.rebuild_batch)
            decode_rate = events / seconds
            built = timed_rebuild(event_log, projection, args.rebuild_batch)
            results[projection.name] = (decode_rate, built)
        samples, plan = inbox_latency(app, args.queries, args.seed)
    finally:
        app.close()
        if not args.keep:
            with psycopg.connect(database.conninfo(), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    print("\n## results")
    print(f"tasks: {args.tasks:,}  log events: {head:,}")
    for name, (decode_rate, built) in results.items():
        print(f"{name}: read+decode {decode_rate:,.0f} events/s | rebuild replay {built['replay_rate']:,.0f} "
              f"events/s (ratio {built['replay_rate'] / decode_rate:.2f}) | rebuild incl. indexes and switch "
              f"{built['total_rate']:,.0f} events/s ({built['events']:,} events in {built['total_seconds']:.1f}s)")
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"inbox 'my groups' open tasks, first page' over {len(samples)} queries: "
          f"median {statistics.median(samples):.2f} ms, p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms")
    print("\nEXPLAIN ANALYZE:\n" + plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
