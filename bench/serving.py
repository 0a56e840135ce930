"""What the benchmarks that start ``skillbase-workflow serve`` share: a free loopback port,
waiting for readiness (the tests' own helper), and the server's resident memory."""

from __future__ import annotations

import socket
from pathlib import Path

from interface.http.testing import wait_until_ready

__all__ = ["free_port", "rss_mb", "wait_until_ready"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
