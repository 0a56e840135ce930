"""Every error as an RFC 9457 problem document, mapped in this one place.

Domain errors map by class (``domain.errors``); Litestar's own errors (routing, body
parsing, auth) by status; a database that does not answer is a 503 with ``Retry-After``.
Anything else is logged with its traceback and answered with an opaque 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from eventsourcing import persistence
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from domain import errors

_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]*)`")
_NO_NUL_MESSAGE = re.compile(r"matching regex '\^\[\^\\+x00\]\*\$'")

log = logging.getLogger("skillbase.workflow.http")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5


class FieldProblem(msgspec.Struct, omit_defaults=True):
    """One failing field: its JSON path in the request, and why."""

    path: str
    message: str
    element: str | None = None
    line: int | None = None


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    errors: list[FieldProblem] | None = None


# status -> (type slug, title). The type is a URI reference, documented in docs/api.md.
_KINDS: dict[int, tuple[str, str]] = {
    400: ("malformed-request", "Malformed request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict with the current state"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("too-large", "Content too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-input", "Invalid input"),
    428: ("precondition-required", "Precondition required"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}

_DOMAIN_STATUS: list[tuple[type[errors.WorkflowError], int]] = [
    (errors.InvalidInput, 422),
    (errors.NotAllowed, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.VersionChanged, 412),
    (errors.TooLarge, 413),
    (errors.Unsupported, 415),
    (errors.Unavailable, 503),
]

_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    persistence.OperationalError,
    persistence.InterfaceError,
    persistence.ConnectionUnavailableError,
)

_MSGSPEC_PATH = re.compile(r" - at `\$(?:\.data)?([^`]*)`$")


class PreconditionFailed(Exception):
    """``If-Match`` named a version the entity no longer has (or never had)."""

    status = 412

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def problem_type(status: int) -> str:
    return f"/problems/{_KINDS.get(status, ('error', ''))[0]}"


def problem(
    request: Request | None, status: int, detail: str, *, title: str | None = None,
    field_errors: list[FieldProblem] | None = None, headers: dict[str, str] | None = None,
) -> Response[ProblemDetails]:
    slug, default_title = _KINDS.get(status, ("error", "Error"))
    body = ProblemDetails(
        type=f"/problems/{slug}", title=title or default_title, status=status, detail=detail,
        instance=request.url.path if request is not None else None, errors=field_errors,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _domain(request: Request, error: errors.WorkflowError) -> Response[ProblemDetails]:
    status = next((code for cls, code in _DOMAIN_STATUS if isinstance(error, cls)), 409)
    fields = None
    if isinstance(error, errors.InvalidInput):
        fields = [FieldProblem(p.path, p.message, p.element, p.line) for p in error.problems] or None
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return problem(request, status, error.detail, title=error.title, field_errors=fields, headers=headers)


def _validation(request: Request, error: ValidationException) -> Response[ProblemDetails]:
    """Litestar's parse errors: a bad body is 422 with the failing path; a bad query or
    header is 400."""
    extra = error.extra if isinstance(error.extra, list) else []
    body_path = None
    cause = error.__cause__
    if cause is not None:
        found = _MSGSPEC_PATH.search(str(cause))
        body_path = f"${found.group(1)}" if found else None
    body_errors = [e for e in extra if isinstance(e, dict) and e.get("source") == "body"]
    if body_errors:
        fields = [
            _field_at_its_path(FieldProblem(
                body_path if body_path and len(body_errors) == 1 else _json_path(e.get("key")), _message(e)))
            for e in body_errors
        ]
        if any(e.get("key") == "data" and e.get("message") == "'data'" for e in body_errors):
            return problem(request, 400, "the request needs a JSON body")
        return problem(request, 422, "the request body is not valid", field_errors=fields)
    fields = [FieldProblem(f"{_source(e.get('source', 'request'))}:{e.get('key', '')}", _message(e))
              for e in extra if isinstance(e, dict)]
    return problem(request, 400, "the request parameters are not valid", field_errors=fields or None)


def _field_at_its_path(field: FieldProblem) -> FieldProblem:
    """msgspec names an unknown or a missing field at the object that holds (or lacks) it
    (``$``): the client's mistake is the field itself (``$.colour``, ``$.reason``)."""
    found = _NAMED_FIELD.search(field.message)
    if found is None or field.path.endswith(f".{found.group(1)}"):
        return field
    return FieldProblem(f"{field.path}.{found.group(1)}", field.message, field.element, field.line)


def _source(source: Any) -> str:
    """``ParamType.QUERY`` -> ``query``: the part of the request a parameter came from."""
    return str(getattr(source, "value", source))


def _json_path(key: Any) -> str:
    if not key or key == "data":
        return "$"
    return "$." + str(key)


def _message(entry: dict[str, Any]) -> str:
    message = str(entry.get("message", "invalid"))
    # The schemas' NUL-free pattern (NO_NUL), said in words rather than as its regex.
    return _NO_NUL_MESSAGE.sub("without a NUL character", message)


def _http(request: Request, error: HTTPException) -> Response[ProblemDetails]:
    status = error.status_code
    if status >= 500:
        log.error("internal error", exc_info=error)
        return problem(request, status, "the service failed to handle this request")
    detail = error.detail if error.detail and error.detail != _KINDS.get(status, ("", ""))[1] else ""
    return problem(request, status, detail or _KINDS.get(status, ("", "Error"))[1], headers=error.headers)


def handle(request: Request, error: Exception) -> Response[ProblemDetails]:
    """The one exception handler of the app."""
    if isinstance(error, errors.WorkflowError):
        return _domain(request, error)
    if isinstance(error, PreconditionFailed):
        return problem(request, 412, error.detail)
    if isinstance(error, ValidationException):
        return _validation(request, error)
    if isinstance(error, HTTPException):
        return _http(request, error)
    if isinstance(error, _UNDECODABLE_BODY) or isinstance(error.__cause__, _UNDECODABLE_BODY):
        # Nested too deep for the decoder, or not UTF-8: the body is not usable JSON.
        return problem(request, 400, "the body is not valid JSON: not UTF-8, or nested too deeply")
    if isinstance(error, _UNAVAILABLE) or isinstance(error.__cause__, _UNAVAILABLE):
        log.warning("database unavailable: %s", type(error).__name__)
        return problem(request, 503, "the database is not answering: retry shortly",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    log.error("unhandled error", exc_info=error)
    return problem(request, 500, "the service failed to handle this request")


_UNDECODABLE_BODY = (RecursionError, UnicodeDecodeError, msgspec.DecodeError)
EXCEPTION_HANDLERS = {Exception: handle}
RESPONSE_MEDIA_TYPE = MediaType.JSON
