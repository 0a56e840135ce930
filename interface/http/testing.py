"""Helpers for tests that drive the API: tokens for made-up users, and a client on an app
built around a given service. Used by this service's tests and by anyone adding a controller."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
from litestar.testing import TestClient

from application.settings import Settings
from interface.http.app import create_app
from interface.http.auth import verifier_from

LEARNER = ("learner-lin", ())
OTHER_LEARNER = ("learner-sam", ())
ASSESSOR = ("assessor-ada", ("assessor",))
OUTSIDER = ("designer-dee", ("designer",))
ADMIN = ("admin-avi", ("admin",))


def token_for(settings: Settings, user: str, groups: tuple[str, ...] | list[str] = (), *,
              email: str | None = None, ttl: int = 3600, **claims: Any) -> str:
    """A token the app built from ``settings`` accepts (HS256 settings or the development key)."""
    verifier = verifier_from(settings)
    now = int(time.time())
    body = {"sub": user, "groups": list(groups), "aud": settings.jwt_audience, "iat": now, "exp": now + ttl,
            **({"email": email} if email else {}), **({"iss": settings.jwt_issuer} if settings.jwt_issuer else {}),
            **claims}
    return jwt.encode(body, verifier.key, algorithm="HS256")


def auth(settings: Settings, user: str, groups: tuple[str, ...] | list[str] = (), **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(settings, user, groups, **kwargs)}"}


@contextmanager
def api_client(settings: Settings, service: Any, database: Any = None, **kwargs: Any) -> Iterator[TestClient]:
    app = create_app(settings, service=service, database=database, **kwargs)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def wait_until_ready(url: str, process: subprocess.Popen[Any], seconds: float, log: Path | None = None) -> None:
    """Until a served process's ``/ready`` answers 200; fails (with its log, when given) if
    it exits first or is not ready in time."""
    def tail() -> str:
        return log.read_text()[-2000:] if log is not None and log.exists() else ""

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before it was ready\n{tail()}")
        time.sleep(0.2)
    raise AssertionError(f"{url} was not ready within {seconds:.0f} s\n{tail()}")
