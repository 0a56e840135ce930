"""Messages from outside: a receive task takes a named message once per message id; a
message that arrives early is kept and delivered when the instance starts waiting."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from application.bootstrap import bootstrap
from application.service import WorkflowService
from application.timers.scheduler import Scheduler
from domain.errors import Conflict, InvalidInput, NotAllowed
from domain.identity import Actor
from domain.instance import COMPLETED, MESSAGE_RECEIVED, RUNNING
from interface.examples import load_example_catalog
from tests.fixtures.clock import ManualClock

pytestmark = pytest.mark.integration

LIN = Actor.of("learner-lin", email="lin@example.org")
SAM = Actor.of("learner-sam", email="sam@example.org")
ADMIN = Actor.of("root", "admin")
PAYMENT = "payment_received"
PAID_BPMN = Path(__file__).resolve().parents[1] / "fixtures" / "bpmn" / "paid-credential.bpmn"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(settings, schema_database, clock):
    app = bootstrap(settings, database=schema_database, clock=clock)
    yield app
    app.close()


@pytest.fixture
def credential_id(service) -> str:
    _skill, credential = load_example_catalog(service)
    number = service.upload_definition_version(ADMIN, credential, {"paid-credential.bpmn": PAID_BPMN.read_bytes()})
    service.deploy_definition_version(ADMIN, credential, number)
    return credential


def confirm(app: WorkflowService, learner: Actor, instance_id: UUID) -> None:
    (task,) = app.get_instance(instance_id).open_tasks
    app.complete_task(learner, task, {})


def message_steps(app: WorkflowService, instance_id: UUID) -> list[str]:
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(start=1, limit=10_000)]
    return [e.cause_id for e in events
            if e.originator_id == instance_id and getattr(e, "cause", None) == MESSAGE_RECEIVED]


def test_a_waiting_instance_takes_the_message_and_its_payload(service, credential_id):
    instance_id = service.start_instance(LIN, credential_id)
    confirm(service, LIN, instance_id)

    outcome = service.deliver_message(ADMIN, PAYMENT, {"amount": 120}, "pay-1", instance_id=instance_id)

    instance = service.get_instance(instance_id)
    assert outcome == "delivered"
    assert instance.status == COMPLETED and instance.end_element_id == "end_paid"
    assert instance.data["payment"] == {"amount": 120}


def test_a_message_delivered_twice_with_the_same_id_has_one_effect(service, credential_id):
    instance_id = service.start_instance(LIN, credential_id)
    confirm(service, LIN, instance_id)

    first = service.deliver_message(ADMIN, PAYMENT, {"amount": 120}, "pay-1", instance_id=instance_id)
    second = service.deliver_message(ADMIN, PAYMENT, {"amount": 120}, "pay-1", instance_id=instance_id)

    assert (first, second) == ("delivered", "duplicate")
    assert message_steps(service, instance_id) == ["pay-1"]


def test_an_early_message_is_kept_and_delivered_when_the_instance_starts_waiting(service, credential_id):
    instance_id = service.start_instance(LIN, credential_id)
    scheduler = Scheduler(service)

    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-early", instance_id=instance_id) == "kept"
    scheduler.run_once()
    assert service.get_instance(instance_id).status == RUNNING  # still at "confirm your details"
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-early", instance_id=instance_id) == "duplicate"

    confirm(service, LIN, instance_id)
    scheduler.run_once()

    instance = service.get_instance(instance_id)
    assert instance.status == COMPLETED and instance.data["payment"] == {"amount": 80}
    assert message_steps(service, instance_id) == ["pay-early"]
    assert service.message_status("pay-early")["status"] == "delivered"


def both_waiting_for_payment(service: WorkflowService, credential_id: str) -> tuple[UUID, UUID]:
    """Lin's and Sam's instances, each confirmed and waiting for a payment message."""
    lins = service.start_instance(LIN, credential_id)
    sams = service.start_instance(SAM, credential_id)
    for learner, instance_id in ((LIN, lins), (SAM, sams)):
        confirm(service, learner, instance_id)
    Scheduler(service).run_once()
    return lins, sams


def test_a_kept_message_expires_after_the_configured_time(service, credential_id, clock):
    instance_id = service.start_instance(LIN, credential_id)
    scheduler = Scheduler(service)
    service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-late", instance_id=instance_id)

    clock.advance(seconds=service.message_keep.total_seconds() + 1)
    confirm(service, LIN, instance_id)
    scheduler.run_once()

    assert service.get_instance(instance_id).status == RUNNING
    assert service.message_status("pay-late")["status"] == "expired"


def test_correlation_keys_find_the_waiting_instance(service, credential_id):
    lins, sams = both_waiting_for_payment(service, credential_id)

    outcome = service.deliver_message(ADMIN, PAYMENT, {"amount": 5}, "pay-sam",
                                      correlation_keys={"user_id": SAM.user_id})

    assert outcome == "delivered"
    assert service.get_instance(sams).status == COMPLETED
    assert service.get_instance(lins).status == RUNNING


def test_who_may_deliver_and_what_a_message_must_carry(service, credential_id):
    instance_id = service.start_instance(LIN, credential_id)

    with pytest.raises(NotAllowed):
        service.deliver_message(LIN, PAYMENT, {}, "by-keys", correlation_keys={"user_id": "x"})
    with pytest.raises(NotAllowed, match="only a service"):  # a learner paying themselves passed the credential
        service.deliver_message(LIN, PAYMENT, {"amount": 0}, "self-paid", instance_id=instance_id)
    assert service.message_status("self-paid", instance_id=instance_id) is None
    with pytest.raises(InvalidInput):
        service.deliver_message(ADMIN, PAYMENT, {}, "", instance_id=instance_id)
    with pytest.raises(InvalidInput):
        service.deliver_message(ADMIN, PAYMENT, {}, "no-target")


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("kwargs", "path"), [
    ({"message_id": "pay\x00-1"}, "$.message_id"),
    ({"message_id": "pay\r\n1"}, "$.message_id"),
    ({"message_id": "x" * 256}, "$.message_id"),
    ({"name": "payment\x00"}, "$.name"),
    ({"name": "p" * 256}, "$.name"),
    ({"payload": {"a": "\x00"}}, "$.payload.a"),
    ({"payload": {"a\x00": 1}}, "$.payload"),
    ({"payload": {"list": [1, {"b": "\ud800"}]}}, "$.payload.list[1].b"),
    ({"payload": {"n": float("nan")}}, "$.payload.n"),
    ({"payload": {"s": {1, 2}}}, "$.payload.s"),
    ({"payload": _nested(5000)}, "$.payload" + ".a" * 32),
    ({"payload": {"big": "x" * (256 * 1024)}}, "$.payload"),
    ({"payload": [1, 2]}, "$.payload"),
    ({"correlation_keys": _nested(5000)}, "$.correlation_keys" + ".a" * 32),
    ({"correlation_keys": {"user_id": "\x00"}}, "$.correlation_keys.user_id"),
    ({"correlation_keys": ["user_id"]}, "$.correlation_keys"),
])
def test_bad_names_ids_payloads_and_keys_are_invalid_input_with_their_path(service, credential_id, kwargs, path):
    instance_id = service.start_instance(LIN, credential_id)
    confirm(service, LIN, instance_id)
    arguments = {"name": PAYMENT, "payload": {"amount": 1}, "message_id": "pay-1", "instance_id": instance_id,
                 **kwargs}
    if "correlation_keys" in kwargs:
        arguments["instance_id"] = None

    with pytest.raises(InvalidInput) as refused:
        service.deliver_message(ADMIN, **arguments)

    assert path in [problem.path for problem in refused.value.problems]
    assert service.get_instance(instance_id).status == RUNNING


def test_a_payload_at_the_depth_limit_is_delivered(service, credential_id):
    instance_id = service.start_instance(LIN, credential_id)
    confirm(service, LIN, instance_id)

    assert service.deliver_message(ADMIN, PAYMENT, _nested(31), "deep-ok", instance_id=instance_id) == "delivered"


def test_message_ids_are_scoped_to_their_target_so_learners_cannot_shadow_each_other(service, credential_id):
    lins = service.start_instance(LIN, credential_id)
    sams = service.start_instance(SAM, credential_id)
    for learner, instance_id in ((LIN, lins), (SAM, sams)):
        confirm(service, learner, instance_id)

    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 1}, "shared-1", instance_id=lins) == "delivered"
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 2}, "shared-1", instance_id=sams) == "delivered"
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 2}, "shared-1", instance_id=sams) == "duplicate"

    assert service.get_instance(lins).data["payment"] == {"amount": 1}
    assert service.get_instance(sams).data["payment"] == {"amount": 2}
    assert service.message_status("shared-1", instance_id=sams)["delivered_to"] == sams
    assert service.message_status("shared-1", instance_id=lins)["delivered_to"] == lins


def test_message_ids_by_correlation_keys_are_scoped_to_those_keys(service, credential_id):
    lins, sams = both_waiting_for_payment(service, credential_id)

    for learner in (LIN, SAM):
        assert service.deliver_message(ADMIN, PAYMENT, {"amount": 3}, "batch-7",
                                       correlation_keys={"user_id": learner.user_id}) == "delivered"
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 3}, "batch-7",
                                   correlation_keys={"user_id": SAM.user_id}) == "duplicate"
    assert service.get_instance(lins).status == COMPLETED and service.get_instance(sams).status == COMPLETED
    assert service.message_status("batch-7", correlation_keys={"user_id": SAM.user_id})["delivered_to"] == sams


def test_a_payload_shaped_like_an_encoded_value_is_refused_and_the_instance_stays_loadable(service, credential_id):
    """The event store reads {"_type_": ..., "_data_": ...} back as an encoded value: stored,
    it made every load of the instance fail, and the timer reader with it."""
    from domain.errors import InvalidInput

    instance_id = service.start_instance(LIN, credential_id)
    confirm(service, LIN, instance_id)
    with pytest.raises(InvalidInput) as refused:
        service.deliver_message(ADMIN, PAYMENT, {"note": {"_type_": "nope", "_data_": 1}}, "m-1",
                                instance_id=instance_id)
    assert [p.path for p in refused.value.problems] == ["$.payload.note._type_"]
    assert service.get_instance(instance_id).is_running


def test_a_message_to_an_ended_instance_is_refused_but_a_retry_of_an_earlier_one_is_a_duplicate(
    service, credential_id
):
    """Was answered "kept" and expired unseen a week later: the sender never learned."""
    instance_id = service.start_instance(LIN, credential_id)
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-1", instance_id=instance_id) == "kept"
    service.cancel_instance(LIN, instance_id, "changed my mind")

    with pytest.raises(Conflict, match="cancelled: it takes no more messages"):
        service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-2", instance_id=instance_id)
    assert service.message_status("pay-2", instance_id=instance_id) is None
    assert service.deliver_message(ADMIN, PAYMENT, {"amount": 80}, "pay-1", instance_id=instance_id) == "duplicate"
