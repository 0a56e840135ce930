"""How a credential's process runs, where a review (2026-11-27) found it wrong: a script
error before the first wait, an email payload holding a date, a path that ends without an end
event, an interrupting event subprocess, and which end event decides the outcome. Each test
failed on the code before its fix."""

from __future__ import annotations

from typing import Any

import pytest

from application.service import WorkflowService
from domain.identity import Actor
from interface.examples import load_example_catalog

pytestmark = pytest.mark.integration

LIN = Actor.of("learner-lin", email="lin@example.org")
ADA = Actor.of("assessor-ada", "Assessor")
ADMIN = Actor.of("root", "admin")

HEAD = '''<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
 id="defs" targetNamespace="https://skillbase.example/workflow">
<bpmn:message id="msg_email" name="email" />
'''
S = '<bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>'


def end(id_: str, outcome: str | None, inc: str) -> str:
    props = ('<bpmn:extensionElements><spiffworkflow:properties><spiffworkflow:property name="outcome" '
             f'value="{outcome}" /></spiffworkflow:properties></bpmn:extensionElements>') if outcome else ""
    return f'<bpmn:endEvent id="{id_}">{props}<bpmn:incoming>{inc}</bpmn:incoming></bpmn:endEvent>'


def ut(id_: str, inc: str, out: str) -> str:
    ins = "".join(f"<bpmn:incoming>{i}</bpmn:incoming>" for i in inc.split())
    outs = "".join(f"<bpmn:outgoing>{o}</bpmn:outgoing>" for o in out.split())
    return f'<bpmn:userTask id="{id_}" name="{id_}">{ins}{outs}</bpmn:userTask>'


def flow(id_: str, s: str, t: str, cond: str | None = None) -> str:
    c = f'<bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{cond}</bpmn:conditionExpression>' if cond else ""
    return f'<bpmn:sequenceFlow id="{id_}" sourceRef="{s}" targetRef="{t}">{c}</bpmn:sequenceFlow>'


def proc(body: str, learner_nodes: list[str]) -> bytes:
    refs = "".join(f"<bpmn:flowNodeRef>{n}</bpmn:flowNodeRef>" for n in learner_nodes)
    return (HEAD + '<bpmn:process id="p" isExecutable="true"><bpmn:laneSet id="ls"><bpmn:lane id="l1" name="Learner">'
            + refs + "</bpmn:lane></bpmn:laneSet>" + body + "</bpmn:process></bpmn:definitions>").encode()


def deploy(app: WorkflowService, xml: bytes) -> str:
    _skill, credential_id = load_example_catalog(app)
    number = app.upload_definition_version(ADMIN, credential_id, {"p.bpmn": xml})
    app.deploy_definition_version(ADMIN, credential_id, number)
    return credential_id


def deploy_script_first(app: WorkflowService, script: str) -> str:
    """A process whose script task runs before its first user task (so at the start)."""
    body = (S + '<bpmn:scriptTask id="sc"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>'
            f"<bpmn:script>{script}</bpmn:script></bpmn:scriptTask>"
            + ut("t", "f2", "f3") + end("e", "pass", "f3")
            + flow("f1", "s", "sc") + flow("f2", "sc", "t") + flow("f3", "t", "e"))
    return deploy(app, proc(body, ["s", "sc", "t", "e"]))


def only_task(app: WorkflowService, instance_id: Any) -> Any:
    (task,) = app.get_instance(instance_id).open_tasks
    return task


# -- a script error before the first wait makes every start a 500 ----------------------------

def test_a_script_error_before_the_first_user_task_fails_the_instance_not_the_start(app: WorkflowService) -> None:
    credential_id = deploy_script_first(app, "tags = set(['a'])")
    instance_id = app.start_instance(LIN, credential_id)  # raised TranscodingNotRegisteredError: a 500 on every start
    instance = app.get_instance(instance_id)
    assert instance.status == "failed" and "is a set" in instance.error
    assert app.get_instance(app.start_instance(Actor.of("learner-sam"), credential_id)).status == "failed"


# -- an email payload with a date makes the preceding task uncompletable (500 forever) ---------

def test_an_email_payload_holding_a_date_does_not_make_every_completion_a_500(app: WorkflowService) -> None:
    payload = "{'template': 'credential_passed', 'to': 'learner', 'respond_by': date.today() + timedelta(days=14)}"
    body = (S + ut("t", "f1", "f2")
            + f'<bpmn:sendTask id="em" messageRef="msg_email"><bpmn:extensionElements><spiffworkflow:messagePayload>'
              f'{payload}</spiffworkflow:messagePayload></bpmn:extensionElements>'
              '<bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing></bpmn:sendTask>'
            + end("e", "pass", "f3") + flow("f1", "s", "t") + flow("f2", "t", "em") + flow("f3", "em", "e"))
    credential_id = deploy(app, proc(body, ["s", "t", "em", "e"]))  # the upload accepts it
    instance_id = app.start_instance(LIN, credential_id)
    task = only_task(app, instance_id)
    errors = []
    for _attempt in range(2):
        try:
            app.complete_task(LIN, task, {})
            break
        except Exception as error:  # noqa: BLE001
            errors.append(f"{type(error).__name__}: {str(error)[:120]}")
    assert not errors, errors
    instance = app.get_instance(instance_id)
    assert instance.status == "completed" and instance.result == "pass"
    (email,) = [m for e in app.events.get(instance_id) for m in getattr(e, "messages", []) if m["name"] == "email"]
    from datetime import date

    assert isinstance(date.fromisoformat(email["payload"]["respond_by"]), date)  # stored as ISO 8601


# -- a process path with no end event: accepted, then completes "fail" with no end element -----

def test_a_process_that_ends_without_an_end_event_fails_with_an_incident_not_a_fail(app: WorkflowService) -> None:
    # The gateway's "yes" branch ends at a user task with no outgoing flow (an implicit end).
    body = (S + '<bpmn:scriptTask id="t"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>'
              '<bpmn:script>score = 90</bpmn:script></bpmn:scriptTask>'
            + '<bpmn:exclusiveGateway id="d" default="f3"><bpmn:incoming>f2</bpmn:incoming>'
              '<bpmn:outgoing>f3</bpmn:outgoing><bpmn:outgoing>f4</bpmn:outgoing></bpmn:exclusiveGateway>'
            + end("e_fail", "fail", "f3") + ut("certify", "f4", "")
            + flow("f1", "s", "t") + flow("f2", "t", "d") + flow("f3", "d", "e_fail")
            + flow("f4", "d", "certify", "score &gt;= 70"))
    credential_id = deploy(app, proc(body, ["s", "t", "d", "e_fail", "certify"]))
    instance_id = app.start_instance(LIN, credential_id)
    app.complete_task(LIN, only_task(app, instance_id), {})
    instance = app.get_instance(instance_id)
    # It was completed, result "fail", end_element_id "": an outcome no end event declared.
    assert (instance.status, instance.result) == ("failed", None), (instance.status, instance.result)
    assert "without reaching an end event" in instance.error


# -- an interrupting event subprocess (a whole-process deadline) never interrupts ---------------

@pytest.fixture
def clock():
    from tests.fixtures.clock import ManualClock
    return ManualClock()


@pytest.fixture
def clocked(settings, schema_database, clock):
    from application.bootstrap import bootstrap
    service = bootstrap(settings, database=schema_database, clock=clock)
    yield service
    service.close()


def test_an_interrupting_event_subprocess_is_refused_at_upload(clocked: WorkflowService, clock: Any) -> None:
    """It uploaded, and when its 30-day timer fired it interrupted nothing: the instance ran on,
    the deadline gone, and the learner could still pass."""
    from domain.errors import BundleInvalid

    esp = ('<bpmn:subProcess id="deadline" triggeredByEvent="true">'
           '<bpmn:startEvent id="es" isInterrupting="true"><bpmn:outgoing>g1</bpmn:outgoing>'
           '<bpmn:timerEventDefinition id="td"><bpmn:timeDuration xsi:type="bpmn:tFormalExpression">"P30D"'
           '</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:startEvent>'
           + end("expired", "fail", "g1") + flow("g1", "es", "expired") + "</bpmn:subProcess>")
    body = S + ut("t", "f1", "f2") + end("e", "pass", "f2") + esp + flow("f1", "s", "t") + flow("f2", "t", "e")
    with pytest.raises(BundleInvalid) as refused:
        deploy(clocked, proc(body, ["s", "t", "e"]))
    (problem,) = refused.value.problems
    assert problem.element == "es" and "interrupting event subprocess" in problem.message
    non_interrupting = body.replace('isInterrupting="true"', 'isInterrupting="false"')
    assert deploy(clocked, proc(non_interrupting, ["s", "t", "e"]))  # accepted: it interrupts nothing by design


# -- the last end event reached decides: a side branch's "pass" end overrides a reached "fail" --

def test_a_fail_end_reached_is_not_overridden_by_a_side_branch_end(clocked: WorkflowService, clock: Any) -> None:
    from application.timers.scheduler import Scheduler

    body = (S + ut("assess", "f1", "f2") + end("end_failed", "fail", "f2")
            + '<bpmn:boundaryEvent id="remind" attachedToRef="assess" cancelActivity="false">'
              '<bpmn:outgoing>f3</bpmn:outgoing><bpmn:timerEventDefinition id="td"><bpmn:timeDuration '
              'xsi:type="bpmn:tFormalExpression">"P7D"</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:boundaryEvent>'
            + '<bpmn:manualTask id="call_learner" name="Phone the learner"><bpmn:incoming>f3</bpmn:incoming>'
              '<bpmn:outgoing>f4</bpmn:outgoing></bpmn:manualTask>'
            + end("reminder_done", "pass", "f4")
            + flow("f1", "s", "assess") + flow("f2", "assess", "end_failed")
            + flow("f3", "remind", "call_learner") + flow("f4", "call_learner", "reminder_done"))
    credential_id = deploy(clocked, proc(body, ["s", "assess", "end_failed", "remind", "call_learner", "reminder_done"]))
    instance_id = clocked.start_instance(LIN, credential_id)
    assess = only_task(clocked, instance_id)
    clock.advance(days=8)
    Scheduler(clocked).run_once()  # the reminder branch opens "Phone the learner"
    call = next(t for t in clocked.get_instance(instance_id).open_tasks if t != assess)
    clocked.complete_task(LIN, assess, {})  # the main path reaches end_failed
    mid = clocked.get_instance(instance_id)
    clocked.complete_task(LIN, call, {})  # the side branch ends last
    instance = clocked.get_instance(instance_id)
    assert mid.status == "running"  # the reminder branch was still open
    assert (instance.status, instance.result, instance.end_element_id) == ("completed", "fail", "end_failed"), (
        instance.status, instance.result, instance.end_element_id)


# -- only BPMN messages leave the process ------------------------------------------------------

def test_a_signal_named_email_is_not_an_email(app: WorkflowService) -> None:
    """Every thrown event was recorded as a message: a signal named ``email`` went to the
    email outbox with the payload "None" and became an incident; a terminate end published a
    message named None."""
    signal = ('<bpmn:intermediateThrowEvent id="sig"><bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>'
              '<bpmn:signalEventDefinition id="sd" signalRef="sg" /></bpmn:intermediateThrowEvent>')
    body = (S + ut("t", "f1", "f2") + signal + end("e", "pass", "f3")
            + flow("f1", "s", "t") + flow("f2", "t", "sig") + flow("f3", "sig", "e"))
    xml = proc(body, ["s", "t", "sig", "e"]).replace(b'<bpmn:process id="p"', b'<bpmn:signal id="sg" name="email" />'
                                                                             b'<bpmn:process id="p"')
    credential_id = deploy(app, xml)
    instance_id = app.start_instance(LIN, credential_id)
    app.complete_task(LIN, only_task(app, instance_id), {})
    assert app.get_instance(instance_id).result == "pass"
    assert [m for e in app.events.get(instance_id) for m in getattr(e, "messages", [])] == []


# -- values the store cannot hold, wherever the engine keeps them (review of the fixes) ------------

def _send(payload: str) -> str:
    return ('<bpmn:sendTask id="send" messageRef="msg_note"><bpmn:extensionElements><spiffworkflow:messagePayload>'
            f'{payload}</spiffworkflow:messagePayload></bpmn:extensionElements>'
            '<bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing></bpmn:sendTask>')


def _with_note_message(xml: bytes) -> bytes:
    return xml.replace(b'<bpmn:process id="p"', b'<bpmn:message id="msg_note" name="note" /><bpmn:process id="p"')


@pytest.mark.parametrize(("payload", "stored"), [
    ("{1: 'low', 2: 'high'}", {"1": "low", "2": "high"}),  # as JSON keeps them; "keys must be strings" failed it
    ("{'tags': set(['a'])}", {"tags": ["a"]}),
    ("'just text'", "just text"),
])
def test_a_message_payload_is_kept_as_json_would_keep_it(app: WorkflowService, payload: str, stored: Any) -> None:
    body = (S + ut("t", "f1", "f2") + _send(payload) + end("e", "pass", "f3")
            + flow("f1", "s", "t") + flow("f2", "t", "send") + flow("f3", "send", "e"))
    credential_id = deploy(app, _with_note_message(proc(body, ["s", "t", "send", "e"])))
    instance_id = app.start_instance(LIN, credential_id)
    app.complete_task(LIN, only_task(app, instance_id), {})
    assert app.get_instance(instance_id).result == "pass"
    (note,) = [m for e in app.events.get(instance_id) for m in getattr(e, "messages", []) if m["name"] == "note"]
    assert note["payload"] == stored


def test_a_date_in_a_message_correlation_is_kept_as_text_not_a_500(app: WorkflowService) -> None:
    """SpiffWorkflow keeps a thrown message's correlation values in the workflow as they came:
    a date there failed every save of the step, on every start."""
    from pathlib import Path

    bundle = (Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "correlated-on-a-nul.bpmn").read_bytes()
    dated = bundle.replace(b"{'when': when}", b"{'when': date(2026, 1, 1)}")
    assert dated != bundle
    _skill, credential_id = load_example_catalog(app)
    app.deploy_definition_version(ADMIN, credential_id,
                                  app.upload_definition_version(ADMIN, credential_id, {"dated.bpmn": dated}))
    instance = app.get_instance(app.start_instance(LIN, credential_id))
    assert instance.status == "running"  # waits for the reply, correlated on "2026-01-01"


def test_an_unpaired_surrogate_in_a_failed_start_fails_the_instance_not_the_start(app: WorkflowService) -> None:
    instance = app.get_instance(app.start_instance(LIN, deploy_script_first(app, "tag = '\\ud800'\nboom = 1 / 0")))
    assert instance.status == "failed" and "ZeroDivisionError" in instance.error


def test_an_unpaired_surrogate_a_script_leaves_fails_the_step(app: WorkflowService) -> None:
    instance = app.get_instance(app.start_instance(LIN, deploy_script_first(app, "tag = '\\ud800'")))
    assert instance.status == "failed" and "unpaired surrogate" in instance.error
