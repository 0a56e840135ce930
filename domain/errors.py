"""Domain errors. The HTTP layer maps each class to one status code, in one place.

``WorkflowError`` -> ``NotAllowed`` (403), ``NotFound`` (404), ``Conflict`` (409),
``InvalidInput`` (422, with one ``Problem`` per failing field), ``TooLarge`` (413),
``Unsupported`` (415), ``Unavailable`` (503, a dependency is down).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One precise reason an input was refused.

    ``path`` is a JSON path into the request (``$.score``) or, for a definition bundle,
    the file name; ``element`` and ``line`` locate it inside a BPMN file where known.
    """

    path: str
    message: str
    element: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        found = {"path": self.path, "message": self.message}
        if self.element is not None:
            found["element"] = self.element
        if self.line is not None:
            found["line"] = self.line
        return found


class WorkflowError(Exception):
    """Base of every error the domain and application raise on purpose."""

    title = "Workflow error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotAllowed(WorkflowError):
    title = "Not allowed"


class NotFound(WorkflowError):
    title = "Not found"


class Conflict(WorkflowError):
    title = "Conflict with the current state"


class IdTaken(Conflict):
    """A start asked for an instance id (derived from an Idempotency-Key) that another
    start of the same user already holds."""


class VersionChanged(WorkflowError):
    """The entity moved on from the version the request said it changes (``If-Match``)."""

    title = "Precondition failed"


class Unavailable(WorkflowError):
    title = "Service unavailable"


class TooLarge(WorkflowError):
    title = "Content too large"


class Unsupported(WorkflowError):
    title = "Unsupported media type"


class InvalidInput(WorkflowError):
    title = "Invalid input"

    def __init__(self, detail: str, problems: list[Problem] | None = None) -> None:
        super().__init__(detail)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        if not self.problems:
            return self.detail
        reasons = "; ".join(
            f"{p.path}{f' <{p.element}>' if p.element else ''}"
            f"{f' line {p.line}' if p.line else ''}: {p.message}"
            for p in self.problems
        )
        return f"{self.detail}: {reasons}"


class BundleInvalid(InvalidInput):
    """A definition bundle was refused; each problem names file, element and line."""

    title = "Invalid definition bundle"


class ScriptRejected(BundleInvalid):
    """A script or condition in a definition uses something the sandbox forbids."""

    title = "Script not allowed"
