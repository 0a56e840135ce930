"""The OpenAPI document: bearer security, the problem responses each route can give,
and the headers every command shares."""

from __future__ import annotations

from typing import Annotated

from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Example, SecurityScheme, Tag
from litestar.params import HeaderParameter

from interface.http.problems import PROBLEM_JSON, FieldProblem, ProblemDetails, problem_type

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key", required=False,
        # No min/max_length here: KEY_PATTERN in interface.http.commands is the one check, so
        # every bad key is the same 422 at `header:Idempotency-Key`.
        description="1 to 255 printable ASCII characters, no spaces (else a 422 at `header:Idempotency-Key`). "
        "Send the same key to retry safely: the same request with the same key returns the "
        "stored response and changes nothing more (also after a restart); the same key with a different "
        "request is a 422. Keys are per user and kept for 7 days.",
        examples=[Example(value="3f0c8a52-1b7e-4f8e-9d43-0b6f1d2a9c11")],
    ),
]
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match", required=False,
        description='Only act if the entity is still at this version (its ETag, e.g. `"3"`); else 412.',
        examples=[Example(value='"3"')],
    ),
]

_EXAMPLES: dict[int, tuple[str, list[FieldProblem] | None]] = {
    400: ("JSON is malformed: expected ':' (byte 17)", None),
    401: ("send 'Authorization: Bearer <token>'", None),
    403: ("only members of group 'assessor' can claim this task", None),
    404: ("task 6b1f0d52-8a0e-5c43-9e5d-2f1c7d0b9a12 not found", None),
    409: ("the task is already claimed by another user", None),
    412: ('the entity is at version 4, not 3', None),
    413: ("Request Entity Too Large", None),
    415: ("send the body as application/json", None),
    422: ("the form data is not valid", [FieldProblem("$.score", "150 is greater than the maximum of 100")]),
    503: ("the database is not answering: retry shortly", None),
}
_DESCRIPTIONS = {
    400: "Malformed request (bad JSON, bad query parameter)",
    401: "No valid bearer token",
    403: "The token is valid but its user may not do this",
    404: "No such entity, or one this user may not know exists",
    409: "Conflicts with the entity's current state",
    412: "If-Match does not match the entity's current version (its ETag)",
    413: "The request body is too large",
    415: "The body is not application/json",
    422: "Invalid input: each failing field with its JSON path",
    503: "The database is not answering; see Retry-After",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """Problem responses for the given status codes (401 and 503 are added to all)."""
    wanted = sorted({*codes, 401, 503})
    return {
        code: ResponseSpec(
            data_container=ProblemDetails,
            description=_DESCRIPTIONS[code],
            media_type=PROBLEM_JSON,
            generate_examples=False,
            examples=[Example(
                summary=_DESCRIPTIONS[code],
                value={
                    "type": problem_type(code), "title": _DESCRIPTIONS[code].split(" (")[0], "status": code,
                    "detail": _EXAMPLES[code][0], "instance": "/tasks/6b1f0d52-8a0e-5c43-9e5d-2f1c7d0b9a12",
                    **({"errors": [{"path": f.path, "message": f.message} for f in _EXAMPLES[code][1]]}
                       if _EXAMPLES[code][1] else {}),
                },
            )],
        )
        for code in wanted
    }


COMMAND_ERRORS = (400, 403, 404, 409, 412, 413, 415, 422)

TAGS = [
    Tag(name="instances", description="A user working towards one credential"),
    Tag(name="tasks", description="Task inboxes and task actions"),
    Tag(name="definitions", description="Versioned BPMN bundles, one definition per credential (admins)"),
    Tag(name="deployments", description="Which definition version each credential of a skill starts on (admins)"),
    Tag(name="operations", description="Health, readiness, metrics, dashboards and audit"),
]


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Skillbase workflow API",
        version=version,
        description=(
            "Start credentials, work task inboxes, administer BPMN definitions. Every error is an RFC 9457 "
            "problem document (`application/problem+json`). Commands accept `Idempotency-Key`; entity "
            "responses carry an `ETag` (the entity's version) that `If-Match` can require."
        ),
        tags=TAGS,
        security=[{"bearer": []}],
        components=Components(security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                                     description="A JWT from skillbase's identity provider: sub, email, groups"),
        }),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        use_handler_docstrings=True,
    )


JSON = MediaType.JSON
