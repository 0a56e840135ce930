"""The HTTP floor: the example process's requests answered by a Litestar app that does nothing
else — the same routes and methods, JSON bodies decoded, small JSON answers — served by
uvicorn the way ``serve`` serves the API (uvloop, httptools). No token check, no storage, no
engine.

    .venv/bin/python bench/bare_http.py PORT

``bench_http.py`` drives it with the same client and request pattern as the real server and
reports its rate and the CPU it costs per process: the share of any process's cost that is
the HTTP stack itself on this machine.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn
from litestar import Litestar, get, post


@post("/instances")
async def start(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "credential_id": data.get("credential_id"), "open_task_ids": [str(uuid.uuid4())]}


@get("/instances/{instance_id:uuid}")
async def instance(instance_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(instance_id), "open_task_ids": [str(uuid.uuid4())]}


@post("/tasks/{task_id:uuid}/claim")
async def claim(task_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(task_id), "status": "claimed"}


@post("/tasks/{task_id:uuid}/complete")
async def complete(task_id: uuid.UUID, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(task_id), "status": "completed", "fields": len(data.get("data", {}))}


@get("/ready")
async def ready() -> str:
    return "ready"


app = Litestar([start, instance, claim, complete, ready])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False,
                server_header=False)
