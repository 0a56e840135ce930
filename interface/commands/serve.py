"""``skillbase-workflow serve``: the HTTP API on ``SKILLBASE_WORKFLOW_HTTP_HOST``/``_PORT``.

With no configuration it runs on the embedded PostgreSQL, loads the example skill and
credential into an empty store (``SKILLBASE_WORKFLOW_LOAD_EXAMPLE_CATALOG=false`` to skip),
and prints the URL, the OpenAPI page and development tokens for a learner, an assessor and
an admin. Logs are JSON lines on stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from typing import Any

import msgspec

from application.settings import Settings, load_settings
from domain.errors import Conflict
from interface.examples import load_example_catalog

log = logging.getLogger("skillbase.workflow.serve")

EXAMPLE_ATTEMPTS = 5  # each lost race means another replica saved something: it ends

DEMO_USERS = (
    ("learner", "learner-lin", [], "lin@example.org"),
    ("assessor", "assessor-ada", ["assessor"], "ada@example.org"),
    ("admin", "admin-avi", ["admin"], "avi@example.org"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP API")
    parser.add_argument("--host", help="overrides SKILLBASE_WORKFLOW_HTTP_HOST")
    parser.add_argument("--port", type=int, help="overrides SKILLBASE_WORKFLOW_HTTP_PORT")
    parser.add_argument("--workers", type=int, help="overrides SKILLBASE_WORKFLOW_HTTP_WORKERS: API processes")
    parser.add_argument(
        "--api-only", action="store_true",
        help="serve the HTTP API alone; run 'projections run', 'mail run', 'timers run', "
        "'relay run' and 'catalog consume' as processes of their own",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from interface.http.observability import configure_json_logging

    overrides = {k: v for k, v in (("http_host", args.host), ("http_port", args.port),
                                   ("http_workers", args.workers)) if v is not None}
    settings = load_settings(**overrides)
    if settings.http_workers < 1:
        raise SystemExit(f"http_workers must be at least 1, got {settings.http_workers}")
    refuse_development_key_off_loopback(settings)
    log_level = args.log_level if args.log_level.upper() != "WARNING" else "INFO"
    configure_json_logging(log_level)
    roles = ServeRoles(api_only=args.api_only, log_level=log_level)
    _exit_cleanly_on_sigterm()
    common = {"host": settings.http_host, "port": settings.http_port, "log_config": None, "access_log": False,
              "server_header": False}
    if settings.http_workers == 1:
        app = app_for(settings, roles)
        print(banner(settings), flush=True)
        uvicorn.run(app, **common)
        return 0
    # Several worker processes share the listening socket; each builds the app from the
    # environment. The embedded database is started here, once, and named to them.
    if settings.embedded_database:
        from application.database import open_database

        database = open_database(settings)
        os.environ.update({"SKILLBASE_WORKFLOW_DATABASE_HOST": database.host,
                           "SKILLBASE_WORKFLOW_DATABASE_PORT": str(database.port)})
    os.environ.update({f"SKILLBASE_WORKFLOW_{k.upper()}": str(v) for k, v in overrides.items()})
    os.environ[ROLES_VARIABLE] = msgspec.json.encode(roles).decode()
    print(banner(settings), flush=True)
    uvicorn.run("interface.commands.serve:app_from_environment", factory=True, workers=settings.http_workers,
                **common)
    return 0


ROLES_VARIABLE = "SKILLBASE_WORKFLOW_SERVE_ROLES"


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    handler it found; under the default one the process dies there, before its ``atexit``
    handlers, and the embedded PostgreSQL (stopped by one) was left running. With this
    handler the process exits normally once uvicorn is done."""
    def exit_now(_signal: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_now)


class ServeRoles(msgspec.Struct, frozen=True):
    """What a worker process runs besides the API (``--api-only``: nothing)."""

    api_only: bool = False
    log_level: str = "INFO"


def app_for(settings: Settings, roles: ServeRoles) -> Any:
    from interface.http.app import create_app

    return create_app(settings, on_ready=lambda service: _load_examples(settings, service),
                      run_projections=not roles.api_only, run_kafka=not roles.api_only,
                      run_workers=not roles.api_only)


def app_from_environment() -> Any:
    """The app of one of ``serve --workers N``'s processes."""
    from interface.http.observability import configure_json_logging

    roles = msgspec.json.decode(os.environ.get(ROLES_VARIABLE, "{}"), type=ServeRoles)
    configure_json_logging(roles.log_level)
    return app_for(load_settings(), roles)


def _load_examples(settings: Settings, service: Any) -> None:
    if not settings.load_example_catalog or service.recorder.max_notification_id():
        return
    for attempt in range(1, EXAMPLE_ATTEMPTS + 1):
        try:
            skill_id, credential_id = load_example_catalog(service)
            break
        except Conflict:
            # Another replica (or worker process), started at the same moment on the same
            # empty store, saved the same skill or credential first; with several of them the
            # skill and the credential can each be lost to a different one. Catalog upserts
            # ignore versions they already have, so loading again completes what is missing
            # and changes nothing else.
            if attempt == EXAMPLE_ATTEMPTS:
                raise
    log.info("example catalog loaded", extra={"skill_id": skill_id, "credential_id": credential_id})


def refuse_development_key_off_loopback(settings: Settings) -> None:
    """The development key signs the tokens ``serve`` prints (an admin's among them) and
    anyone who reads its file can mint more: it serves this machine only. Listening on any
    other address needs a real key."""
    from interface.http.auth import verifier_from

    if not verifier_from(settings).development or _is_loopback(settings.http_host):
        return
    raise SystemExit(
        f"serve: no signing key is configured, and the development key serves only a loopback address, "
        f"not {settings.http_host!r}: set SKILLBASE_WORKFLOW_JWT_HS256_SECRET or SKILLBASE_WORKFLOW_JWT_PUBLIC_KEY, "
        "or SKILLBASE_WORKFLOW_HTTP_HOST=127.0.0.1")


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def banner(settings: Settings) -> str:
    from interface.http.auth import mint_token, verifier_from

    base = f"http://{settings.http_host}:{settings.http_port}"
    lines = [
        f"skillbase workflow API on {base}",
        f"  OpenAPI page:     {base}/schema  (document: {base}/schema/openapi.json)",
        f"  health/readiness: {base}/health  {base}/ready",
    ]
    if verifier_from(settings).development:
        lines.append("  development tokens (DEVELOPMENT KEY under data_dir; valid 12 h):")
        for role, user, groups, email in DEMO_USERS:
            lines.append(f"    {role:<9} {user:<13} {mint_token(settings, user, groups, email)}")
        if settings.load_example_catalog:
            lines.append("  example credential: 9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e (POST /instances)")
    else:
        lines.append("  tokens come from the identity provider (a signing key is configured)")
    return "\n".join(lines)
