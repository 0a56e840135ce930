"""Task form data checked against the task's JSON Schema form.

Every failing field is reported with its JSON path (``$.score``); a missing required
field is reported at the path it should have had. Keys that start with ``_`` are refused
whatever the schema says: form data becomes process data, which scripts read.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing.exceptions import Unresolvable

from application.transcoder import RESERVED_KEY, RESERVED_KEY_PROBLEM
from domain.errors import Conflict, InvalidInput, Problem

FILE_FIELD = re.compile(r"(^|_)files?$")
MAX_FORM_BYTES = 256 * 1024


@lru_cache(maxsize=512)
def _validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text), format_checker=FormatChecker())


def _path(error: Any) -> str:
    path = error.json_path
    if error.validator == "required":
        missing = re.match(r"'([^']+)' is a required property", error.message)
        if missing:
            return _member(path, missing.group(1))
    return path


def _problems(error: Any) -> list[Problem]:
    """The problems one schema error stands for: a field the form does not have is named at
    its own path (``$.colour``), one problem each, not at the object that holds it."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = set(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        extra = [key for key in error.instance
                 if key not in known and not any(p.search(key) for p in patterns)]
        if extra:
            return [Problem(_member(error.json_path, key), "this form has no such field") for key in extra]
    return [Problem(_path(error), error.message)]


def _reserved(value: Any, path: str) -> list[Problem]:
    """Objects carrying ``RESERVED_KEY``, which the event store would read back as an
    encoded value."""
    found: list[Problem] = []
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            if RESERVED_KEY in item:
                found.append(Problem(_member(where, RESERVED_KEY), RESERVED_KEY_PROBLEM))
            stack += [(v, _member(where, str(k))) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{where}[{i}]") for i, v in enumerate(item)]
    return found


def _member(path: str, key: str) -> str:
    return f"{path}.{key}"


def validate_form(schema_text: str | None, data: Any) -> dict[str, Any]:
    """Returns ``data`` when it satisfies the form; raises ``InvalidInput`` otherwise."""
    if not isinstance(data, dict):
        raise InvalidInput("form data must be a JSON object", [Problem("$", "expected an object")])
    try:
        size = len(json.dumps(data))
    except (RecursionError, TypeError, ValueError):
        raise InvalidInput("form data must be plain JSON", [Problem("$", "nested too deeply, or not JSON values")]) from None
    if size > MAX_FORM_BYTES:
        raise InvalidInput("form data is too large", [Problem("$", f"at most {MAX_FORM_BYTES} bytes")])
    problems = [
        Problem(f"$.{key}", "field names may not start with '_'" if str(key).startswith("_")
                else "a field name is a letter or '_' followed by letters, digits or '_'")
        for key in data
        if not isinstance(key, str) or key.startswith("_") or not key.isidentifier()
    ]
    problems += _reserved(data, "$")
    if schema_text is None:
        problems += [Problem(f"$.{key}", "this task has no form: send {}") for key in data]
    else:
        try:
            errors = sorted(_validator(schema_text).iter_errors(data), key=lambda e: e.json_path)
        except Unresolvable as error:
            # A form stored before bundles were checked for this: the definition is at fault.
            raise Conflict(f"this task's form cannot be checked ({error}): an admin must deploy a fixed "
                           "definition version") from None
        except RecursionError:
            # The same, for a form that refers to itself without end.
            raise Conflict("this task's form refers to itself without end and cannot be checked: an admin "
                           "must deploy a fixed definition version") from None
        problems += [problem for error in errors for problem in _problems(error)]
    if problems:
        raise InvalidInput("the form data is not valid", problems)
    return data


def file_references(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(JSON path, file id) for every value of a ``*_file``/``*_files`` field."""
    found = []
    for key, value in data.items():
        if not FILE_FIELD.search(key):
            continue
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            if isinstance(item, str):
                path = f"$.{key}[{index}]" if isinstance(value, list) else f"$.{key}"
                found.append((path, item))
    return found
