"""What the benchmarks that start ``skillbase-workflow serve`` share: a free loopback port,
waiting for readiness, and the server's resident memory."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, seconds: float) -> None:
    """Until ``/ready`` answers 200; stops early, and loudly, if the server exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} was not ready within {seconds:.0f} s")


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children (the workers of ``--workers``)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in (children.read_text().split() if children.exists() else []):
        total += rss_mb(int(child))
    return total
