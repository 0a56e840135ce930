"""Service memory with many running instances in the store (issue 4: < 500 MB at 100,000).

    .venv/bin/python bench/bench_memory.py [--instances 100000] [--threads 4] [--requests 2000]

Starts ``--instances`` instances of the example credential through the real application
(``WorkflowService.start_instance``, several threads) on a fresh schema of the PostgreSQL
at 127.0.0.1:5432, then starts ``skillbase-workflow serve --api-only`` on that schema and
reads its resident memory after start-up and after ``--requests`` ``GET /instances/{id}`` of
random instances (each loads the instance from its events). Baseline in the same run: the
same server on an empty schema after the same number of requests to its one instance.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from application.bootstrap import bootstrap  # noqa: E402
from application.database import Database, ensure_database  # noqa: E402
from application.settings import load_settings  # noqa: E402
from domain.identity import Actor  # noqa: E402
from interface.examples import load_example_catalog  # noqa: E402
from interface.http.testing import auth  # noqa: E402
from serving import free_port, rss_mb, wait_until_ready  # noqa: E402


def populate(settings, count: int, threads: int) -> list[str]:
    app = bootstrap(settings)
    _, credential = load_example_catalog(app)
    ids: list[str] = []
    lock = threading.Lock()
    started = time.perf_counter()

    def work(worker: int) -> None:
        for n in range(worker, count, threads):
            instance = app.start_instance(Actor.of(f"learner-{n}", email=f"l{n}@example.org"), credential)
            with lock:
                ids.append(str(instance))
                if len(ids) % 10_000 == 0:
                    rate = len(ids) / (time.perf_counter() - started)
                    print(f"  {len(ids):,} instances ({rate:,.0f}/s)", flush=True)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    app.close()
    return ids


def measure(settings, env: dict[str, str], ids: list[str], requests: int) -> tuple[float, float]:
    port = free_port()
    env = {**env, "SKILLBASE_WORKFLOW_HTTP_PORT": str(port), "SKILLBASE_WORKFLOW_LOAD_EXAMPLE_CATALOG": "false"}
    server = subprocess.Popen([sys.executable, "-m", "interface.cli", "--log-level", "ERROR", "serve", "--api-only"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server, 60)
        after_start = rss_mb(server.pid)
        headers = auth(settings, "admin-avi", ["admin"])
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            for _ in range(requests):
                response = client.get(f"/instances/{random.choice(ids)}")
                assert response.status_code == 200, response.text
        return after_start, rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    results = {}
    for label, count in (("baseline", 1), ("loaded", args.instances)):
        schema = f"bench_mem_{uuid.uuid4().hex[:8]}"
        database = Database(host="127.0.0.1", port=5432, name="test", user="postgres", password="", schema=schema)
        ensure_database(database)
        env = {**os.environ, "SKILLBASE_WORKFLOW_DATABASE_HOST": "127.0.0.1", "SKILLBASE_WORKFLOW_DATABASE_NAME": "test",
               "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": schema, "SKILLBASE_WORKFLOW_DATA_DIR": f"/tmp/{schema}"}
        settings = load_settings({k: v for k, v in env.items() if k.startswith("SKILLBASE_WORKFLOW_")})
        try:
            print(f"{label}: starting {count:,} instances", flush=True)
            ids = populate(settings, count, args.threads)
            results[label] = measure(settings, env, ids, args.requests)
            print(f"{label}: {count:,} running instances; server RSS {results[label][0]:.0f} MB after start, "
                  f"{results[label][1]:.0f} MB after {args.requests:,} instance loads", flush=True)
        finally:
            with psycopg.connect(database.conninfo(), autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            shutil.rmtree(f"/tmp/{schema}", ignore_errors=True)
    base, loaded = results["baseline"][1], results["loaded"][1]
    print(f"\nRSS with {args.instances:,} running instances: {loaded:.0f} MB "
          f"(baseline with 1: {base:.0f} MB; ratio {loaded / base:.2f}); target < 500 MB")


if __name__ == "__main__":
    main()
