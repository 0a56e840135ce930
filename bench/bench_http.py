"""HTTP API benchmark: the full example process over HTTP at 1, 8 and 32 concurrent clients,
next to its two floors measured in the same run — the same process on SpiffWorkflow alone
(engine floor) and single-row INSERT+COMMIT on the same PostgreSQL (storage floor) — and an
HTTP floor: the same requests answered by ``bare_http.py``, a Litestar app on the same stack
that does nothing else. The CPU a process costs at the three floors, summed, gives a ceiling
on processes/s for this machine's cores that no service on this stack can pass.

    .venv/bin/python bench/bench_http.py --processes 40 --levels 1,8,32

It starts ``skillbase-workflow serve`` (projections on, Kafka off) on a fresh schema of the
PostgreSQL at SKILLBASE_WORKFLOW_DATABASE_HOST (default 127.0.0.1, database ``test``),
drives it with aiohttp (``--client httpx`` for the earlier client, ~5x its CPU a request),
and prints processes/s, p50/p95/p99 per request type, the CPU each part of the machine spent
per process (server, projections, every PostgreSQL backend, this client), the floors, the
ratios and the server's resident memory. Evidence is attached through the service (the
upload endpoint is issue 6's), outside the timed HTTP requests, by this process: its CPU
counts as the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from application.bootstrap import bootstrap, open_file_store  # noqa: E402
from application.database import Database, ensure_database  # noqa: E402
from application.engine.builtin_templates import load_template  # noqa: E402
from application.engine.bundle import validate_bundle  # noqa: E402
from application.engine.runner import Engine, SpecRef  # noqa: E402
from application.settings import load_settings  # noqa: E402
from domain.identity import Actor  # noqa: E402
from interface.http.testing import token_for  # noqa: E402
from serving import free_port, rss_mb, wait_until_ready  # noqa: E402

CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
SUBMIT = "My fillet weld on 6 mm mild steel, photographed after cleaning."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


# -- the HTTP run ------------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def json(self) -> Any:
        return json.loads(self.body)


class AiohttpClient:
    """The default load generator: ~160 µs of client CPU a request, against ~780 µs for
    httpx (measured here). On 2 cores the client shares the machine with the service."""

    def __init__(self, url: str, clients: int) -> None:
        self.session = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients),
                                             timeout=aiohttp.ClientTimeout(total=60))

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self.session.request(method, path, **kwargs) as response:
            return Answer(response.status, await response.read())

    async def close(self) -> None:
        await self.session.close()


class HttpxClient:
    def __init__(self, url: str, clients: int) -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.http = httpx.AsyncClient(base_url=url, timeout=60, limits=limits)

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        response = await self.http.request(method, path, **kwargs)
        return Answer(response.status_code, response.content)

    async def close(self) -> None:
        await self.http.aclose()


CLIENTS = {"aiohttp": AiohttpClient, "httpx": HttpxClient}


class Run:
    def __init__(self, url: str, settings: Any, attach: Any, client: str = "aiohttp") -> None:
        self.url, self.settings, self.attach = url, settings, attach
        self.client = CLIENTS[client]
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.assessor = {"Authorization": f"Bearer {token_for(settings, 'assessor-ada', ['assessor'])}"}

    async def call(self, http: Any, kind: str, method: str, path: str, **kwargs: Any) -> Answer:
        started = time.perf_counter()
        response = await http.request(method, path, **kwargs)
        self.latency[kind].append(time.perf_counter() - started)
        if response.status >= 400:
            raise RuntimeError(f"{kind}: {response.status} {response.body[:300]!r}")
        return response

    async def one_process(self, http: Any, n: int) -> None:
        learner = {"Authorization": f"Bearer {token_for(self.settings, f'bench-learner-{uuid.uuid4().hex[:8]}')}"}
        started = (await self.call(http, "start", "POST", "/instances", json={"credential_id": CREDENTIAL},
                                   headers={**learner, "Idempotency-Key": uuid.uuid4().hex})).json()
        instance = started["id"]
        submit = started["open_task_ids"][0]
        file_id = await asyncio.to_thread(self.attach, learner, instance)
        await self.call(http, "complete", "POST", f"/tasks/{submit}/complete", headers=learner,
                        json={"data": {"statement": SUBMIT, "evidence_files": [file_id]}})
        for data in ({"score": 80 if n % 4 else 40, "feedback": "Reviewed."}, {}):
            found = await self.call(http, "get_instance", "GET", f"/instances/{instance}", headers=learner)
            open_tasks = found.json()["open_task_ids"]
            if not open_tasks:
                return
            task = open_tasks[0]
            await self.call(http, "claim", "POST", f"/tasks/{task}/claim", headers=self.assessor)
            await self.call(http, "complete", "POST", f"/tasks/{task}/complete", headers=self.assessor,
                            json={"data": data})

    async def level(self, clients: int, processes: int) -> tuple[float, dict[str, list[float]]]:
        self.latency = defaultdict(list)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(processes):
            queue.put_nowait(n)
        http = self.client(self.url, clients)
        try:
            async def worker() -> None:
                while not queue.empty():
                    await self.one_process(http, queue.get_nowait())

            started = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(clients)])
            elapsed = time.perf_counter() - started
        finally:
            await http.close()
        return processes / elapsed, dict(self.latency)


# -- where the CPU goes ------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) so far of each named process with its children, of this
    process (the client), and of every PostgreSQL server process on the machine."""
    tick = os.sysconf("SC_CLK_TCK")

    def of(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        total = (int(fields[11]) + int(fields[12])) / tick
        children = Path(f"/proc/{pid}/task/{pid}/children")
        return total + sum(of(int(c)) for c in (children.read_text().split() if children.exists() else []))

    found = {name: of(pid) for name, pid in pids.items()}
    found["client"] = _own(Path(f"/proc/{os.getpid()}"), tick)  # without its children, counted above
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres += _own(entry, tick)  # backends alone: the postmaster's children
            except OSError:
                continue
    found["postgres"] = postgres
    return found


def _own(entry: Path, tick: int) -> float:
    fields = (entry / "stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / tick


# -- floors ----------------------------------------------------------------------------------


def engine_floor(processes: int) -> float:
    """The same process on SpiffWorkflow alone: start, then complete each ready task."""
    bundle = validate_bundle(load_template("credential-assessment"), max_bytes=1024 * 1024)
    ref = SpecRef(("bench", 1), bundle.spec_state, bundle.engine_format)
    engine = Engine()
    forms = [{"statement": SUBMIT, "evidence_files": [str(uuid.uuid4())]}, {"score": 80, "feedback": "ok"}, {}]
    started = time.perf_counter()
    for _ in range(processes):
        now = datetime.now(timezone.utc)
        step = engine.start(ref, {}, now=now)
        for data in forms:
            if not step.ready:
                break
            step = engine.complete_task(ref, step.engine_state, bundle.engine_format,
                                        step.ready[0].engine_task_id, data, now=now)
        assert step.finished, step
    return processes / (time.perf_counter() - started)


def service_floor(service: Any, files: Any, processes: int) -> float:
    """The same process through ``WorkflowService`` in this process, one thread, no HTTP (the
    same storage, engine and events as the API; no parsing, tokens, threads or responses)."""
    from interface.commands.demo import _run_learner

    assessor = Actor.of("assessor-ada", "assessor")
    started = time.perf_counter()
    for n in range(processes):
        _run_learner(service, files, Actor.of(f"floor-learner-{uuid.uuid4().hex[:8]}"), assessor, CREDENTIAL,
                     80 if n % 4 else 40)
    return processes / (time.perf_counter() - started)


def storage_floor(conninfo: str, schema: str, transactions: int, threads: int) -> float:
    """Single-row INSERT+COMMIT transactions per second on the same PostgreSQL."""
    table = f'"{schema}".bench_floor'
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, body text)")
    per_thread = transactions // threads
    failures: list[BaseException] = []

    def work() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as connection:
                for _ in range(per_thread):
                    connection.execute(f"INSERT INTO {table} (body) VALUES (%s)", ("x" * 200,))
        except psycopg.OperationalError as error:
            failures.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:  # a shared server may be out of connections: no figure rather than a wrong one
        raise failures[0]
    return per_thread * threads / (time.perf_counter() - started)


SAVES_PER_PROCESS = 7  # the example process's commands that save events, the attach included


def bare_http_floor(settings: Any, levels: list[int], processes: int) -> dict[int, tuple[float, float]]:
    """The same client and requests against ``bare_http.py``: {clients: (processes/s, CPU ms
    a process of that server and this client)}."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_http.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(url, bare, 60)
        run = Run(url, settings, lambda _headers, _instance: str(uuid.uuid4()))
        asyncio.run(run.level(2, 4))  # warm up
        found = {}
        for clients in levels:
            count = max(processes, clients)
            before = cpu_seconds({"server": bare.pid})
            rate, _latency = asyncio.run(run.level(clients, count))
            after = cpu_seconds({"server": bare.pid})
            found[clients] = (rate, sum(after[k] - before[k] for k in ("server", "client")) * 1000 / count)
        return found
    finally:
        bare.terminate()
        bare.wait(20)


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=40, help="complete processes per concurrency level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--api-only", action="store_true",
                        help="serve --api-only, with the projections in a process of their own")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes (serve --workers)")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="aiohttp",
                        help="the load generator's HTTP client (its CPU is printed with the rest)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    host = os.environ.get("SKILLBASE_WORKFLOW_DATABASE_HOST", "127.0.0.1")
    name = os.environ.get("SKILLBASE_WORKFLOW_DATABASE_NAME", "test")
    database = Database(host=host, port=5432, name=name, user="postgres", password="", schema=schema)
    ensure_database(database)
    data_dir = Path(f"/tmp/{schema}")
    port = free_port()
    env = {**os.environ, "SKILLBASE_WORKFLOW_DATABASE_HOST": host, "SKILLBASE_WORKFLOW_DATABASE_NAME": name,
           "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": schema, "SKILLBASE_WORKFLOW_DATA_DIR": str(data_dir),
           "SKILLBASE_WORKFLOW_HTTP_PORT": str(port), "SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS": "",
           # 16 connections per API process in all, so two workers stay within max_connections
           "SKILLBASE_WORKFLOW_DATABASE_POOL_SIZE": str(max(4, 16 // args.workers))}
    settings = load_settings({k: v for k, v in env.items() if k.startswith("SKILLBASE_WORKFLOW_")})
    serve = (["serve", "--api-only"] if args.api_only else ["serve"]) + ["--workers", str(args.workers)]
    server = subprocess.Popen([sys.executable, "-m", "interface.cli", "--log-level", "ERROR", *serve], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readers = None
    url = f"http://127.0.0.1:{port}"
    service = None
    try:
        wait_until_ready(url, server, 90)
        service = bootstrap(settings)
        files = open_file_store(settings)
        if args.api_only:
            readers = subprocess.Popen([sys.executable, "-m", "interface.cli", "--log-level", "ERROR",
                                        "projections", "run"], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"layout: {'serve --api-only + projections run' if args.api_only else 'serve (all roles)'},"
              f" {args.workers} API worker process(es)")

        def attach(headers: dict[str, str], instance: str) -> str:
            import jwt

            user = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})["sub"]
            stored = files.write([b"weld notes\n"], "text/plain")
            service.attach_file(Actor.of(user), uuid.UUID(instance), file_id=stored.file_id,
                                extension=stored.extension, media_type=stored.media_type, size=stored.size,
                                sha256=stored.sha256, name="weld.txt")
            return str(stored.file_id)

        run = Run(url, settings, attach, args.client)
        asyncio.run(run.level(2, 4))  # warm up
        results = {}
        pids = {"server": server.pid, **({"projections": readers.pid} if readers is not None else {})}
        print(f"client: {args.client}")
        for clients in levels:
            processes = max(args.processes, clients)
            before = cpu_seconds(pids)
            rate, latency = asyncio.run(run.level(clients, processes))
            after = cpu_seconds(pids)
            results[clients] = (rate, latency)
            print(f"\n== {clients} concurrent clients: {rate:.1f} processes/s "
                  f"({rate * 6:.0f} commands/s), server RSS {rss_mb(server.pid):.0f} MB")
            spent = {name: (after[name] - before[name]) * 1000 / processes for name in after}
            print("   CPU ms per process: " + ", ".join(f"{name} {ms:.1f}" for name, ms in spent.items())
                  + f"; all {sum(spent.values()):.1f}")
            print(f"   {'request':<14}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
            for kind, values in sorted(latency.items()):
                print(f"   {kind:<14}{len(values):>6}{percentile(values, .5) * 1000:>10.1f}"
                      f"{percentile(values, .95) * 1000:>10.1f}{percentile(values, .99) * 1000:>10.1f}")

        http_floor = bare_http_floor(settings, levels, args.processes)
        engine = statistics.median(engine_floor(max(20, args.processes)) for _ in range(3))
        in_process = service_floor(service, files, max(20, args.processes // 2))
        storage_1 = storage_floor(database.conninfo(), schema, 2000, 1)
        before = cpu_seconds({})
        try:
            storage_8 = storage_floor(database.conninfo(), schema, 4000, 8)
        except psycopg.OperationalError as error:  # a shared server may be out of connections
            print(f"storage floor with 8 clients not measured: {error}")
            storage_8 = float("nan")
        after = cpu_seconds({})
        commit_ms = sum(after[name] - before[name] for name in after) * 1000 / 4000
        print(f"\nload average during the run: {os.getloadavg()}")
        print(f"engine floor (SpiffWorkflow alone, same process): {engine:.0f} processes/s")
        print(f"service floor (WorkflowService in-process, 1 thread, no HTTP; projections still following): "
              f"{in_process:.1f} processes/s")
        print(f"storage floor (INSERT+COMMIT): {storage_1:.0f} tx/s with 1 client, {storage_8:.0f} tx/s with 8")
        best = max(rate for rate, _ in results.values())
        print(f"best HTTP rate {best:.1f} processes/s = {best / engine:.1%} of the engine floor, "
              f"{best / in_process:.0%} of the in-process service; "
              f"{best * 6:.0f} commands/s = {best * 6 / storage_8:.1%} of the 8-client storage floor")
        # Any implementation spends at least the engine's CPU, the HTTP stack's for the same
        # requests and PostgreSQL's for the same commits: their sum over the machine's cores
        # is a ceiling on processes/s, whatever the service does in between.
        http_rate = max(rate for rate, _ in http_floor.values())
        http_ms = min(ms for _, ms in http_floor.values())
        engine_ms = 1000 / engine
        floors_ms = engine_ms + http_ms + SAVES_PER_PROCESS * commit_ms
        cores = os.cpu_count() or 1
        print(f"HTTP floor (bench/bare_http.py, same client and requests): best {http_rate:.0f} processes/s, "
              f"at least {http_ms:.1f} ms of CPU a process (server and client)")
        print(f"CPU a process at the floors: engine {engine_ms:.1f} + HTTP {http_ms:.1f} + "
              f"{SAVES_PER_PROCESS} commits x {commit_ms:.2f} (PostgreSQL and client) = {floors_ms:.1f} ms; "
              f"on {cores} cores the ceiling is {cores * 1000 / floors_ms:.0f} processes/s; "
              f"best HTTP rate = {best / (cores * 1000 / floors_ms):.0%} of it")
    finally:
        if service is not None:
            service.close()
        for process in (server, readers):
            if process is not None:
                process.terminate()
                process.wait(20)
        with psycopg.connect(database.conninfo(), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(data_dir, ignore_errors=True)  # the evidence files and the dev key


if __name__ == "__main__":
    main()
