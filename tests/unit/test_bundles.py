"""Definition bundles: each bad bundle has exactly one defect, made by editing the
built-in example, and is refused with a message that names the problem, the file and,
where it applies, the element and line."""

from __future__ import annotations

from typing import Any

import pytest

from application.engine.builtin_templates import load_template
from application.engine.bundle import validate_bundle
from domain.errors import BundleInvalid, NotAllowed, Problem

BPMN = "credential-assessment.bpmn"
ASSESS_FORM = "assess-evidence.schema.json"
LIMIT = 1024 * 1024
EXAMPLE = load_template("credential-assessment")
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def example_text() -> str:
    return EXAMPLE[BPMN].decode()


def replaced(old: str, new: str, *, count: int = 1) -> dict[str, bytes]:
    text = example_text()
    assert text.count(old) >= count, f"the example no longer contains {old!r}"
    files = dict(EXAMPLE)
    files[BPMN] = text.replace(old, new, count).encode()
    return files


def line_of(files: dict[str, bytes], needle: str) -> int:
    text = files[BPMN].decode()
    return text[: text.index(needle)].count("\n") + 1


def refused(files: dict[str, bytes], max_bytes: int = LIMIT) -> list[Problem]:
    with pytest.raises(BundleInvalid) as raised:
        validate_bundle(files, max_bytes=max_bytes)
    assert raised.value.problems, "a refusal names at least one problem"
    return raised.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


# -- the good example ------------------------------------------------------------------------


def test_the_example_bundle_validates() -> None:
    bundle = validate_bundle(EXAMPLE, max_bytes=LIMIT)
    assert bundle.process_id == "credential_assessment"
    assert set(bundle.files) == set(EXAMPLE)
    assert set(bundle.forms) == {ASSESS_FORM, "submit-evidence.schema.json"}
    assert len(bundle.sha256) == 64
    assert bundle.engine_format.startswith("spiff-bpmn/")
    assert "assess_evidence" in str(bundle.spec_state)
    # the same content in another dict order has the same digest
    assert validate_bundle(dict(reversed(list(EXAMPLE.items()))), max_bytes=LIMIT).sha256 == bundle.sha256


# -- hostile XML -----------------------------------------------------------------------------


def test_broken_xml_names_file_and_line() -> None:
    files = replaced("</bpmn:process>", "")
    problem = only(refused(files))
    assert problem.path == BPMN
    assert "not well-formed XML" in problem.message
    assert problem.line == line_of(files, "</bpmn:definitions>")


def test_an_xxe_payload_is_refused_and_never_resolved() -> None:
    files = replaced(XML_DECL, XML_DECL + '<!DOCTYPE x [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n')
    files[BPMN] = files[BPMN].replace(b'name="Credential assessment"', b'name="&x;"')
    problem = only(refused(files))
    assert problem.path == BPMN
    assert "DTD" in problem.message or "document type" in problem.message
    assert problem.line == 2
    assert "root:" not in str(problem)


def test_a_billion_laughs_payload_is_refused() -> None:
    laughs = (
        '<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10)
        )
        + "]>\n"
    )
    files = replaced(XML_DECL, XML_DECL + laughs)
    files[BPMN] = files[BPMN].replace(b'name="Credential assessment"', b'name="&lol9;"')
    problem = only(refused(files))
    assert problem.path == BPMN
    assert "document type declarations" in problem.message


def test_a_utf16_document_with_a_doctype_is_refused_before_parsing() -> None:
    text = example_text().replace('encoding="UTF-8"', 'encoding="UTF-16"').replace(
        XML_DECL.replace("UTF-8", "UTF-16"),
        XML_DECL.replace("UTF-8", "UTF-16") + '<!DOCTYPE x [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n',
    )
    files = {**EXAMPLE, BPMN: text.encode("utf-16")}
    problem = only(refused(files))
    assert problem.path == BPMN and "not UTF-8" in problem.message


def test_a_file_over_the_size_limit_is_refused_before_parsing() -> None:
    total = sum(len(v) for v in EXAMPLE.values())
    problem = only(refused(EXAMPLE, max_bytes=total - 1))
    assert f"the bundle is {total} bytes, the limit is {total - 1}" == problem.message
    # one oversized file by itself
    huge = {**EXAMPLE, BPMN: EXAMPLE[BPMN] + b" " * LIMIT}
    assert "limit" in only(refused(huge)).message


# -- the BPMN conventions -------------------------------------------------------------------


def test_an_end_event_without_outcome_names_the_end_event_and_its_line() -> None:
    files = replaced(
        '<spiffworkflow:property name="outcome" value="fail" />\n        </spiffworkflow:properties>\n'
        "      </bpmn:extensionElements>\n      <bpmn:incoming>to_end_failed",
        "</spiffworkflow:properties>\n      </bpmn:extensionElements>\n      <bpmn:incoming>to_end_failed",
    )
    problem = only(refused(files))
    assert problem.path == BPMN
    assert problem.element == "end_failed"
    assert problem.line == line_of(files, '<bpmn:endEvent id="end_failed"')
    assert "outcome" in problem.message and "pass or fail" in problem.message


def test_an_outcome_other_than_pass_or_fail_is_named() -> None:
    files = replaced('name="outcome" value="pass"', 'name="outcome" value="maybe"')
    problem = only(refused(files))
    assert problem.element == "end_passed" and "'maybe'" in problem.message


def test_a_missing_form_file_names_the_task_and_the_file() -> None:
    files = {name: content for name, content in EXAMPLE.items() if name != ASSESS_FORM}
    problem = only(refused(files))
    assert problem.path == BPMN
    assert problem.element == "assess_evidence"
    assert ASSESS_FORM in problem.message and "not in the bundle" in problem.message
    assert problem.line == line_of(files, '<bpmn:userTask id="assess_evidence"')


def test_an_invalid_json_schema_form_names_the_form_file() -> None:
    files = {**EXAMPLE, ASSESS_FORM: EXAMPLE[ASSESS_FORM].replace(b'"type": "object"', b'"type": "objekt"')}
    problem = only(refused(files))
    assert problem.path == ASSESS_FORM
    assert "not a valid JSON Schema" in problem.message and "/type" in problem.message


def test_a_form_that_is_not_json_names_the_line() -> None:
    files = {**EXAMPLE, ASSESS_FORM: b'{\n  "type": "object",\n  oops\n}'}
    problem = only(refused(files))
    assert problem.path == ASSESS_FORM and problem.line == 3 and "not JSON" in problem.message


def test_a_user_task_outside_any_lane_is_named() -> None:
    files = replaced("        <bpmn:flowNodeRef>assess_evidence</bpmn:flowNodeRef>\n", "")
    problem = only(refused(files))
    assert problem.element == "assess_evidence"
    assert "lane" in problem.message
    assert problem.line == line_of(files, '<bpmn:userTask id="assess_evidence"')


def _with_script(script: str) -> dict[str, bytes]:
    """The example with a script task between submitting and notifying."""
    files = replaced(
        '<bpmn:sequenceFlow id="to_notify" sourceRef="submit_evidence" targetRef="notify_assessor" />',
        '<bpmn:sequenceFlow id="to_notify" sourceRef="submit_evidence" targetRef="compute" />\n'
        '    <bpmn:sequenceFlow id="to_notify2" sourceRef="compute" targetRef="notify_assessor" />',
    )
    text = files[BPMN].decode()
    text = text.replace(
        '<bpmn:sendTask id="notify_assessor"',
        '<bpmn:scriptTask id="compute" name="Compute">\n'
        "      <bpmn:incoming>to_notify</bpmn:incoming>\n"
        "      <bpmn:outgoing>to_notify2</bpmn:outgoing>\n"
        f"      <bpmn:script>{script}</bpmn:script>\n"
        "    </bpmn:scriptTask>\n"
        '    <bpmn:sendTask id="notify_assessor"',
    ).replace(
        "<bpmn:incoming>to_notify</bpmn:incoming>\n      <bpmn:outgoing>to_assess",
        "<bpmn:incoming>to_notify2</bpmn:incoming>\n      <bpmn:outgoing>to_assess",
    )
    return {**files, BPMN: text.encode()}


def test_a_harmless_script_task_is_accepted() -> None:
    validate_bundle(_with_script("checked = len(evidence_files) &gt; 0"), max_bytes=LIMIT)


def test_a_script_with_import_os_is_refused() -> None:
    files = _with_script('import os\nos.system("id")')
    problem = only(refused(files))
    assert problem.path == BPMN
    assert problem.element == "compute"
    assert "import is not allowed" in problem.message
    assert problem.line == line_of(files, '<bpmn:scriptTask id="compute"')


def test_a_condition_with_dunder_import_is_refused() -> None:
    files = replaced("score &gt;= 70", "__import__('os').system('id') or score &gt;= 70")
    problem = only(refused(files))
    assert problem.element == "decision"
    assert "condition" in problem.message and "__import__" in problem.message


def test_a_non_executable_process_is_refused() -> None:
    problem = only(refused(replaced('isExecutable="true"', 'isExecutable="false"')))
    assert problem.path == BPMN
    assert "isExecutable" in problem.message


# -- the bundle's shape ----------------------------------------------------------------------


def test_two_bpmn_files_are_refused() -> None:
    problem = only(refused({**EXAMPLE, "second.bpmn": EXAMPLE[BPMN]}))
    assert "exactly one .bpmn file, not 2" in problem.message


def test_no_bpmn_file_is_refused() -> None:
    files = {k: v for k, v in EXAMPLE.items() if k != BPMN}
    assert "not 0" in only(refused(files)).message


@pytest.mark.parametrize("name", ["../credential-assessment.bpmn", "sub/x.json", "/etc/x.json", ".hidden.json",
                                  "x.exe"])
def test_a_file_name_with_a_path_or_a_bad_extension_is_refused(name: str) -> None:
    files = dict(EXAMPLE)
    if name.endswith(".bpmn"):
        files[name] = files.pop(BPMN)
    else:
        files[name] = b"{}"
    problems = refused(files)
    assert any(p.path == name and "no folders" in p.message for p in problems), problems


def test_a_file_that_is_not_utf8_is_refused() -> None:
    problem = only(refused({**EXAMPLE, ASSESS_FORM: b"\xff\xfe{}"}))
    assert problem.path == ASSESS_FORM and "UTF-8" in problem.message


# -- uploading through the application (in-memory store, no I/O) -------------------------------


@pytest.fixture
def memory_app() -> Any:
    from application.service import WorkflowService
    from interface.examples import load_example_catalog

    app = WorkflowService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    _skill, credential = load_example_catalog(app)
    yield app, credential
    app.close()


def test_the_same_bundle_uploaded_twice_is_the_same_version(memory_app: Any) -> None:
    from domain.identity import Actor

    app, credential = memory_app
    admin = Actor.of("root", "admin")
    changed = _with_script("checked = True")
    first = app.upload_definition_version(admin, credential, changed)
    events = app.recorder.max_notification_id()
    assert first == 2  # version 1 is the built-in template the credential started with
    assert app.upload_definition_version(admin, credential, dict(changed)) == 2
    assert app.recorder.max_notification_id() == events
    assert app.upload_definition_version(admin, credential, EXAMPLE) == 1  # the template itself
    assert app.get_definition(credential).latest_version == 2


def test_an_upload_with_a_defect_stores_nothing(memory_app: Any) -> None:
    from domain.identity import Actor

    app, credential = memory_app
    events = app.recorder.max_notification_id()
    with pytest.raises(BundleInvalid):
        app.upload_definition_version(Actor.of("root", "admin"), credential, _with_script("import os"))
    assert app.recorder.max_notification_id() == events


def test_a_learner_cannot_upload(memory_app: Any) -> None:
    from domain.identity import Actor

    app, credential = memory_app
    with pytest.raises(NotAllowed):
        app.upload_definition_version(Actor.of("learner-lin", "assessor"), credential, _with_script("x = 1"))
    assert app.get_definition(credential).latest_version == 1




# -- what validated and then failed at run time (found in review) ------------------------------

DMN = """<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="rules" name="Rules" namespace="skillbase">
  <decision id="grade" name="Grade">
    <decisionTable id="grade_table">
      <input id="in_score" label="Score">
        <inputExpression id="in_score_expr" typeRef="number"><text>score</text></inputExpression>
      </input>
      <output id="out_grade" name="grade" typeRef="string" />
      <rule id="r1">
        <inputEntry id="r1_in"><text>&gt;= 70</text></inputEntry>
        <outputEntry id="r1_out"><text>"pass"</text></outputEntry>
      </rule>
    </decisionTable>
  </decision>
</definitions>
"""


def test_a_bundle_with_a_dmn_file_is_parsed_not_a_crash() -> None:
    bundle = validate_bundle({**EXAMPLE, "rules.dmn": DMN.encode()}, max_bytes=LIMIT)
    assert "rules.dmn" in bundle.files


def test_a_form_that_refers_to_itself_without_end_is_refused() -> None:
    problem = only(refused({**EXAMPLE, ASSESS_FORM: b'{"type": "object", "$ref": "#"}'}))
    assert problem.path == ASSESS_FORM and "refers to itself" in problem.message


def test_a_service_task_is_refused() -> None:
    files = replaced(
        "      <bpmn:documentation>Watch the learner perform the skill in person, then mark this task done.</bpmn:documentation>\n",
        "      <bpmn:extensionElements><spiffworkflow:serviceTaskOperator id=\"http/GetRequest\" "
        "resultVariable=\"answer\" /></bpmn:extensionElements>\n")
    files[BPMN] = files[BPMN].replace(b'<bpmn:manualTask id="observe_demonstration"',
                                      b'<bpmn:serviceTask id="observe_demonstration"').replace(
        b"</bpmn:manualTask>", b"</bpmn:serviceTask>")
    problems = refused(files)
    assert any(p.element == "observe_demonstration" and "service tasks" in p.message for p in problems), problems


def test_a_lane_with_a_blank_name_is_refused() -> None:
    problems = refused(replaced('<bpmn:lane id="lane_assessor" name="Assessor">', '<bpmn:lane id="lane_assessor" name="  ">'))
    assert any(p.element == "assess_evidence" and "lane" in p.message for p in problems), problems


def test_a_manual_task_with_a_form_is_refused() -> None:
    documentation = ("      <bpmn:documentation>Watch the learner perform the skill in person, then mark this "
                     "task done.</bpmn:documentation>\n")
    files = replaced(documentation, documentation +
                     '      <bpmn:extensionElements><spiffworkflow:properties><spiffworkflow:property '
                     'name="formJsonSchemaFilename" value="checklist.json" /></spiffworkflow:properties>'
                     '</bpmn:extensionElements>\n')
    problem = only(refused(files))
    assert problem.element == "observe_demonstration" and "only a user task takes a form" in problem.message


def test_a_file_name_ending_in_a_newline_is_refused() -> None:
    problems = refused({**EXAMPLE, "extra.json\n": b"{}"})
    assert any(p.path == "extra.json\n" for p in problems), problems


@pytest.mark.parametrize("due_in", ["-P1D", "P0D", "PT0S", "two weeks", "P99999999D", "P101Y"])
def test_a_due_in_that_gives_no_sensible_due_date_is_refused(due_in: str) -> None:
    """Was taken silently: a typo gave no due date, a negative one a task overdue at once
    whose reminder came after its due date."""
    form = '<spiffworkflow:property name="formJsonSchemaFilename" value="assess-evidence.schema.json" />'
    problem = only(refused(replaced(form, form + f'<spiffworkflow:property name="dueIn" value="{due_in}" />')))
    assert problem.element == "assess_evidence" and problem.message.startswith("dueIn is an ISO 8601 duration")
    assert repr(due_in) in problem.message


@pytest.mark.parametrize("due_in", ["P14D", "PT36H", "P1M", "P1Y2M"])
def test_a_due_in_above_zero_is_accepted(due_in: str) -> None:
    form = '<spiffworkflow:property name="formJsonSchemaFilename" value="assess-evidence.schema.json" />'
    validate_bundle(replaced(form, form + f'<spiffworkflow:property name="dueIn" value="{due_in}" />'), max_bytes=LIMIT)


def test_a_lane_name_over_200_characters_is_refused() -> None:
    """A lane is the group kept in the task inbox's index, which holds ~2,700 bytes an entry."""
    problems = refused(replaced('<bpmn:lane id="lane_assessor" name="Assessor">',
                                f'<bpmn:lane id="lane_assessor" name="{"A" * 201}">'))
    assert any(p.element == "assess_evidence" and "at most 200 characters" in p.message for p in problems), problems
