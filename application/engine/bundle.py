"""A definition bundle (one BPMN file, its JSON Schema forms, its DMN tables), validated
completely before anything is stored.

Every problem is collected and reported together, each naming its file, element id and
line where known: hardened XML, the BPMN XSD, SpiffWorkflow's own parse, then the
skillbase conventions (DESIGN.md, "BPMN conventions").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from lxml import etree
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from application.engine import conventions
from application.engine.safe_xml import parse_xml
from application.engine.serializer import ENGINE_FORMAT, spec_state
from domain.errors import BundleInvalid, Problem

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(bpmn|dmn|json)\Z")
BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
_FORM_URI = "urn:skillbase:form"

_validator: BpmnValidator | None = None


def _xsd_validator() -> BpmnValidator:
    """Building the XSD validator costs milliseconds: build it once per process."""
    global _validator
    if _validator is None:
        _validator = BpmnValidator()
    return _validator


@dataclass(frozen=True)
class ParsedBundle:
    process_id: str
    files: dict[str, str]
    sha256: str
    spec_state: dict[str, Any]
    engine_format: str
    forms: dict[str, dict[str, Any]]


def bundle_sha256(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def _check_event_subprocesses(bpmn_name: str, tree: Any) -> None:
    """SpiffWorkflow interrupts only for boundary events: an interrupting event subprocess
    (a deadline for the whole process, the usual BPMN way) ran to its end and interrupted
    nothing, and its deadline was gone. Refused until the engine can do it."""
    problems = [
        Problem(path=bpmn_name, element=start.get("id"),
                message="an interrupting event subprocess is not supported: put an interrupting boundary "
                        "event on the activity (or a subprocess around the steps), or make this start "
                        'non-interrupting (isInterrupting="false")',
                line=start.sourceline)
        for start in tree.getroot().iterfind(f".//{{{BPMN_NS}}}subProcess[@triggeredByEvent='true']/{{{BPMN_NS}}}startEvent")
        if start.get("isInterrupting", "true") != "false"
    ]
    if problems:
        raise BundleInvalid("the definition breaks the BPMN conventions", problems)


def validate_bundle(files: dict[str, bytes], *, max_bytes: int) -> ParsedBundle:
    """Parses and checks a bundle; raises ``BundleInvalid`` listing every problem."""
    _check_names_and_size(files, max_bytes)
    texts = _decode_texts(files)
    bpmn_name = next(name for name in files if name.endswith(".bpmn"))
    trees = {
        name: parse_xml(files[name], filename=name, max_bytes=max_bytes)
        for name in files
        if name.endswith((".bpmn", ".dmn"))
    }
    _check_xsd(bpmn_name, trees[bpmn_name])
    _check_event_subprocesses(bpmn_name, trees[bpmn_name])
    forms = _parse_forms(files)
    parser = SpiffBpmnParser()
    process_id = _executable_process(bpmn_name, trees[bpmn_name])
    try:
        parser.add_bpmn_xml(trees[bpmn_name], filename=bpmn_name)
        for name, tree in trees.items():
            if name.endswith(".dmn"):
                parser.add_dmn_xml(tree.getroot(), filename=name)
        spec = parser.get_spec(process_id)
        subprocess_specs = parser.get_subprocess_specs(process_id)
    except ValidationException as error:
        raise BundleInvalid(
            "the BPMN process cannot be parsed",
            [
                Problem(
                    path=error.file_name or bpmn_name,
                    message=str(error).splitlines()[0],
                    element=error.id or None,
                    line=error.line_number or None,
                )
            ],
        ) from None
    except Exception as error:  # noqa: BLE001 - SpiffWorkflow's parser fails in other ways too
        raise BundleInvalid(
            "the BPMN process cannot be parsed",
            [Problem(path=bpmn_name, message=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")],
        ) from None
    problems = conventions.check(spec, subprocess_specs, forms, files)
    if problems:
        lines = _element_lines(trees[bpmn_name])
        located = [
            Problem(p.path, p.message, p.element, p.line or lines.get(p.element or ""))
            for p in problems
        ]
        raise BundleInvalid("the definition breaks the BPMN conventions", located)
    return ParsedBundle(
        process_id=process_id,
        files=texts,
        sha256=bundle_sha256(files),
        spec_state=spec_state(spec, subprocess_specs),
        engine_format=ENGINE_FORMAT,
        forms=forms,
    )


def _check_names_and_size(files: dict[str, bytes], max_bytes: int) -> None:
    problems = [
        Problem(path=name, message="file names are letters, digits, '.', '_' or '-' ending "
                "in .bpmn, .dmn or .json, with no folders")
        for name in files
        if not FILE_NAME.match(name)
    ]
    bpmn = [name for name in files if name.endswith(".bpmn")]
    if len(bpmn) != 1:
        problems.append(Problem(path="$", message=f"a bundle has exactly one .bpmn file, not {len(bpmn)}"))
    total = sum(len(content) for content in files.values())
    if total > max_bytes:
        problems.append(Problem(path="$", message=f"the bundle is {total} bytes, the limit is {max_bytes}"))
    if problems:
        raise BundleInvalid("the bundle is not acceptable", problems)


def _decode_texts(files: dict[str, bytes]) -> dict[str, str]:
    texts, problems = {}, []
    for name, content in files.items():
        try:
            texts[name] = content.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(path=name, message=f"not UTF-8 text: {error.reason} at byte {error.start}"))
    if problems:
        raise BundleInvalid("the bundle is not text", problems)
    return texts


def _check_xsd(name: str, tree: etree._ElementTree) -> None:
    try:
        _xsd_validator().validate(tree, name)
    except ValidationException as error:
        raise BundleInvalid(
            "the BPMN file is not valid BPMN 2.0",
            [Problem(path=name, message=str(error).splitlines()[0], line=error.line_number or None)],
        ) from None


def _executable_process(name: str, tree: etree._ElementTree) -> str:
    processes = tree.getroot().findall(f"{{{BPMN_NS}}}process")
    executable = [p for p in processes if p.get("isExecutable") == "true"]
    if len(executable) != 1:
        raise BundleInvalid(
            "the process is not executable",
            [
                Problem(
                    path=name,
                    message='exactly one bpmn:process must have isExecutable="true"; '
                    f"found {len(executable)} of {len(processes)}",
                )
            ],
        )
    return executable[0].get("id")


def _parse_forms(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    forms, problems = {}, []
    for name, content in files.items():
        if not name.endswith(".json"):
            continue
        try:
            schema = json.loads(content)
            if not isinstance(schema, dict):
                raise ValueError("a form schema is a JSON object")
            Draft202012Validator.check_schema(schema)
            _check_references(schema)
            _check_terminates(schema)
        except json.JSONDecodeError as error:
            problems.append(Problem(path=name, message=f"not JSON: {error.msg}", line=error.lineno))
        except SchemaError as error:
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(Problem(path=name, message=f"not a valid JSON Schema at '/{where}': {error.message}"))
        except ValueError as error:
            problems.append(Problem(path=name, message=str(error)))
        else:
            forms[name] = schema
    if problems:
        raise BundleInvalid("a form file is not a valid JSON Schema", problems)
    return forms


def _check_terminates(schema: dict[str, Any]) -> None:
    """A form that refers to itself without end (``{"$ref": "#"}``) is a valid schema that
    no submission can ever pass: validating anything against it recurses until Python
    stops it. Validating an empty object shows it here, at upload."""
    try:
        for _error in Draft202012Validator(schema).iter_errors({}):
            pass
    except RecursionError:
        raise ValueError("the form refers to itself without end ($ref): no submission could be checked") from None


def _check_references(schema: dict[str, Any]) -> None:
    """Every ``$ref`` of a form must resolve inside the form itself. The validator never
    fetches anything, so a remote or dangling reference would pass here and then make
    every submission of the task fail (an unresolvable reference raises while validating)."""
    resolver = Registry().with_resource(_FORM_URI, DRAFT202012.create_resource(schema)).resolver(_FORM_URI)
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    if not value.startswith("#"):
                        raise ValueError(f"{key} '{value}': a form may refer only to its own parts ('#/...')")
                    try:
                        resolver.lookup(value)
                    except Unresolvable:
                        raise ValueError(f"{key} '{value}' does not resolve inside this form") from None
                else:
                    stack.append(value)


def _element_lines(tree: etree._ElementTree) -> dict[str, int]:
    return {
        element.get("id"): element.sourceline
        for element in tree.iter()
        if isinstance(element.tag, str) and element.get("id")
    }
