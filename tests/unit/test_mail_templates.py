"""The default mail templates render for the example process; overrides and errors are clear."""

from __future__ import annotations

import pytest

from application.mail.templates import MailTemplates
from domain.errors import InvalidInput

INSTANCE_ID = "6f1c2a4e-0d3b-4c55-9a61-2b7f0f9e8a10"


def context(**changes: object) -> dict:
    found = {
        "credential_name": "MIG welding, level 2",
        "learner_email": "ada@example.org",
        "learner_id": "user-17",
        "instance_id": INSTANCE_ID,
        "outcome": None,
        "task_name": "Submit evidence",
        "data": {"score": 80},
    }
    found.update(changes)
    return found


def test_evidence_submitted_tells_assessors_which_credential_and_where_to_look():
    subject, text, html = MailTemplates().render("evidence_submitted", context())

    assert subject == "Evidence submitted for MIG welding, level 2"
    for body in (text, html):
        assert "MIG welding, level 2" in body
        assert "ada@example.org" in body
        assert f"/instances/{INSTANCE_ID}" in body


@pytest.mark.parametrize(
    ("template", "outcome", "subject", "phrase"),
    [
        ("credential_passed", "pass", "You passed MIG welding, level 2", "you passed"),
        ("credential_failed", "fail", "Your assessment for MIG welding, level 2", "did not result"),
    ],
)
def test_learner_hears_the_outcome(template, outcome, subject, phrase):
    rendered_subject, text, html = MailTemplates().render(template, context(outcome=outcome))

    assert rendered_subject == subject
    for body in (text, html):
        assert phrase in body
        assert f"/instances/{INSTANCE_ID}" in body


def test_a_hostile_credential_name_is_escaped_in_html_and_kept_verbatim_in_text():
    hostile = "<script>alert('x')</script>"

    subject, text, html = MailTemplates().render(
        "credential_passed", context(credential_name=hostile)
    )

    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert hostile in text
    assert hostile in subject


def test_the_subject_is_one_line_whatever_the_input():
    subject, _, _ = MailTemplates().render(
        "credential_passed", context(credential_name="a\r\nBcc: victim@example.org")
    )

    assert "\n" not in subject and "\r" not in subject


def test_an_override_directory_wins_and_missing_parts_fall_back_to_the_defaults(tmp_path):
    (tmp_path / "credential_passed.subject.txt").write_text("Well done, {{ learner_email }}")
    (tmp_path / "credential_passed.html").write_text("<p>{{ credential_name }} is yours</p>")

    subject, text, html = MailTemplates(str(tmp_path)).render("credential_passed", context())

    assert subject == "Well done, ada@example.org"
    assert html == "<p>MIG welding, level 2 is yours</p>"
    assert "you passed the assessment" in text  # the default text part


def test_an_override_directory_can_add_a_template(tmp_path):
    parts = {"subject.txt": "Reminder", "txt": "{{ task_name }}", "html": "<b>x</b>"}
    for part, body in parts.items():
        (tmp_path / f"task_reminder.{part}").write_text(body)

    assert MailTemplates(str(tmp_path)).render("task_reminder", context()) == (
        "Reminder",
        "Submit evidence",
        "<b>x</b>",
    )


def test_an_unknown_template_is_invalid_input_naming_it():
    with pytest.raises(InvalidInput, match="unknown mail template 'no_such_template'"):
        MailTemplates().render("no_such_template", context())


@pytest.mark.parametrize("name", ["../etc/passwd", "credential_passed/../x", ""])
def test_a_template_name_that_is_not_a_plain_name_is_refused(name):
    with pytest.raises(InvalidInput, match="not a plain name"):
        MailTemplates().render(name, context())


def test_a_missing_context_key_names_the_key_and_the_file():
    incomplete = context()
    del incomplete["credential_name"]

    with pytest.raises(InvalidInput) as raised:
        MailTemplates().render("credential_passed", incomplete)

    assert raised.value.problems[0].path == "credential_passed.subject.txt"
    assert "'credential_name' is undefined" in str(raised.value)


def test_an_override_cannot_reach_python_internals(tmp_path):
    for part in ("subject.txt", "txt"):
        (tmp_path / f"sneaky.{part}").write_text("x")
    (tmp_path / "sneaky.html").write_text("{{ data.__class__.__mro__[1].__subclasses__() }}")

    with pytest.raises(InvalidInput, match="cannot be rendered"):
        MailTemplates(str(tmp_path)).render("sneaky", context())


def test_a_broken_override_reports_file_and_line(tmp_path):
    (tmp_path / "credential_failed.txt").write_text("line one\n{% if %}\n")

    with pytest.raises(InvalidInput) as raised:
        MailTemplates(str(tmp_path)).render("credential_failed", context())

    problem = raised.value.problems[0]
    assert (problem.path, problem.line) == ("credential_failed.txt", 2)
