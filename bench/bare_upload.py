"""The ceiling for an upload through this HTTP stack: one Litestar endpoint that streams the
request body into the service's own file store (``PosixFileStore.write_async``: sha256 while
streaming, fsync, rename), served by uvicorn the way ``serve`` serves the API (uvloop,
httptools), and nothing else: no token, no instance to check, no event to save.

    .venv/bin/python bench/bare_upload.py ROOT PORT

``bench_files.py`` runs it beside the real server and reports its rate as the "bare upload"
column: what any upload endpoint on this stack and this machine can reach, so that the API's
ratio to it shows what the service adds.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from litestar import Litestar, Request, get, post  # noqa: E402

from application.files import PosixFileStore  # noqa: E402

MB = 1024 * 1024


def app_for(root: Path) -> Litestar:
    store = PosixFileStore(root, max_bytes=200 * MB, allowed_types=("video/mp4",))

    @post("/upload", request_max_body_size=None)
    async def upload(request: Request) -> dict[str, str]:
        stored = await store.write_async(request.stream(), "video/mp4")
        return {"path": str(stored.path), "sha256": stored.sha256}

    @get("/ready")
    async def ready() -> str:
        return "ready"

    return Litestar([upload, ready])


if __name__ == "__main__":
    uvicorn.run(app_for(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]), log_level="error",
                access_log=False, server_header=False)
