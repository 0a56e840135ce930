"""One way to run a command over HTTP: ``If-Match``, ``Idempotency-Key``, a worker thread,
the metrics, and the response with its ``ETag``.

A controller says what the command does (``decide``) and, when it targets an existing
entity, how to load that entity (``entity_of``) for ``If-Match``; this module does the
rest, the same way for every command (ADR 0006).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from litestar import Request, Response

from application.idempotency import KeyInProgress, KeyReused
from domain.errors import Conflict, InvalidInput, Problem, WorkflowError
from interface.http.problems import PreconditionFailed, problem
from interface.http.services import Services

IDEMPOTENCY_KEY = "Idempotency-Key"
LOG_POSITION = "Workflow-Log-Position"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}\Z")
_UUID_IN_PATH = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_fingerprint_encoder = msgspec.json.Encoder(order="sorted")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Outcome:
    body: msgspec.Struct
    status: int = 200
    etag: str | None = None
    location: str | None = None

    position: int | None = None

    def headers(self) -> dict[str, str]:
        found = {}
        if self.position is not None:
            found[LOG_POSITION] = str(self.position)
        if self.etag:
            found["ETag"] = self.etag
        if self.location:
            found["Location"] = self.location
        return found


Decide = Callable[[str | None], Outcome]


async def run_command(
    request: Request,
    services: Services,
    name: str,
    decide: Decide,
    *,
    payload: msgspec.Struct | None = None,
    entity_of: Callable[[], Any] | None = None,
    recover: Decide | None = None,
) -> Response[Any]:
    """Runs ``decide`` once per idempotency key; ``recover`` answers a Conflict that is
    the command's own earlier effect (a retry after the response was lost). ``entity_of``
    loads the entity an ``If-Match`` header speaks of; the version it names must still be
    the entity's when the command's events are saved."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not KEY_PATTERN.match(key):
        raise InvalidInput(
            "the Idempotency-Key header is not valid",
            [Problem("header:Idempotency-Key", "1 to 255 printable ASCII characters, no spaces")],
        )
    if_match = request.headers.get("If-Match")
    fingerprint = _fingerprint(request, payload)
    user = request.user.user_id

    service = services.service

    def decide_and_locate(key: str | None) -> Outcome:
        outcome = decide(key)
        position = service.saved_position()
        return replace(outcome, position=position if position is not None else service.recorder.max_notification_id())

    def execute() -> tuple[int, dict[str, str], bytes, str]:
        if key is None:
            outcome = _decide(service, decide_and_locate, None, if_match, entity_of, None)
            return outcome.status, outcome.headers(), _encoder.encode(outcome.body), "ok"
        with services.idempotency.claim(user, key, fingerprint) as slot:
            if slot.replay is not None:
                stored = slot.replay
                return stored.status, {**stored.headers, "Idempotent-Replayed": "true"}, stored.body, "replayed"
            outcome = _decide(service, decide_and_locate, key, if_match, entity_of, recover)
            body = _encoder.encode(outcome.body)
            slot.save(outcome.status, outcome.headers(), body)
            return outcome.status, outcome.headers(), body, "ok"

    try:
        status, headers, body, result = await services.run(execute)
    except KeyInProgress:
        services.metrics.commands.labels(name, "key_in_progress").inc()
        # The first attempt's answer is not known yet: a 409 with Retry-After (as the IETF
        # Idempotency-Key draft asks), so that a client's own retry logic comes back for it.
        return problem(request, 409, "a request with this Idempotency-Key is still being handled: retry shortly",
                       headers={"Retry-After": "1"})
    except KeyReused:
        services.metrics.commands.labels(name, "key_reused").inc()
        raise InvalidInput(
            "this Idempotency-Key was already used with a different request",
            [Problem("header:Idempotency-Key", "use a new key for a new request")],
        ) from None
    except WorkflowError as error:
        services.metrics.commands.labels(name, type(error).__name__).inc()
        raise
    except PreconditionFailed:
        services.metrics.commands.labels(name, "precondition_failed").inc()
        raise
    services.metrics.commands.labels(name, result).inc()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _decide(
    service: Any, decide: Decide, key: str | None, if_match: str | None,
    entity_of: Callable[[], Any] | None, recover: Decide | None,
) -> Outcome:
    service.forget_saved()
    try:
        if if_match is not None and entity_of is not None:
            entity = entity_of()
            if check_if_match(if_match, entity.version):
                service.expect_versions({entity.id: entity.version})  # checked again at the save
        return decide(key)
    except (Conflict, PreconditionFailed):
        # A retry whose first attempt saved its effect and lost its answer meets the entity
        # moved on: a Conflict, or a 412 for the version it named. Its effect is answered.
        service.expect_versions({})
        recovered = recover(key) if recover is not None and key is not None else None
        if recovered is None:
            raise
        # Nothing is saved now: the log's head lies at or after the first attempt's events.
        return replace(recovered, position=service.recorder.max_notification_id())
    finally:
        # The expectation is this command's: left on the worker thread, a later save there
        # that never came through here (a file upload) was refused against it.
        service.expect_versions({})


def last_by(service: Any, aggregate_id: Any, fact: str, **fields: Any) -> str | None:
    """Who recorded the aggregate's last ``fact`` whose ``fields`` match: a ``recover``
    answers an earlier effect only to the user who made it (the state does not say)."""
    found = None
    for event in service.events.get(aggregate_id):
        if type(event).__name__ == fact and all(getattr(event, k, None) == v for k, v in fields.items()):
            found = getattr(event, "by", None)
    return found


def check_if_match(header: str, version: int) -> bool:
    """``If-Match: "<version>"`` (or a list of them, or ``*``) against the entity's version;
    True when the header named versions (not ``*``)."""
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    if "*" in tags:
        return False
    # If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never matches.
    wanted = {tag.strip('"') for tag in tags if not tag.startswith("W/")}
    if str(version) not in wanted:
        named = ", ".join(sorted(tags))
        raise PreconditionFailed(f"the entity is at version {version}, not {named}")
    return True


def _fingerprint(request: Request, payload: msgspec.Struct | None) -> str:
    digest = hashlib.sha256()
    # Ids in the path in any case name the same entity, so they fingerprint the same.
    path = _UUID_IN_PATH.sub(lambda found: found.group(0).lower(), request.url.path)
    digest.update(f"{request.method} {path}\n".encode())
    if payload is not None:
        digest.update(_fingerprint_encoder.encode(payload))
    return digest.hexdigest()
