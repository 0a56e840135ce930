"""One bad row must not stop a worker: an email, a due time that raises something no one
expected is set aside (incident or back-off) and the others still go out / fire."""

from __future__ import annotations

import logging

import pytest

from application.timers.scheduler import Scheduler
from domain.identity import Actor
from domain.instance import COMPLETED, RUNNING
# The outbox tests' fixtures, shared rather than copied: the same service and worker.
from tests.integration.test_email_outbox import (  # noqa: F401 - fixtures
    ASSESSORS, clock, mail_settings, run_process, service, worker,
)
from tests.integration.test_timers import waiting_for_assessment

pytestmark = pytest.mark.integration

POISON = "lin@example.org\r\nBcc: x@evil.example"
SAM = Actor.of("learner-sam", email="sam@example.org")


def test_a_learner_email_with_a_header_injection_is_refused_and_the_rest_still_goes(
        service, mail_settings, worker, smtp_server, caplog):
    poisoned = run_process(service, mail_settings, 85, learner=Actor.of("learner-lin", email=POISON))
    run_process(service, mail_settings, 85, learner=SAM)

    with caplog.at_level(logging.INFO):
        assert worker.run_once() == 3  # both assessor emails and Sam's
    assert worker.run_once() == 0

    received = smtp_server.wait_for(3)
    assert sorted(r.rcpt_tos for r in received) == [(ASSESSORS,), (ASSESSORS,), ("sam@example.org",)]
    assert all("evil" not in r.message.as_string() for r in received)
    (incident,) = service.get_instance(poisoned).open_incidents
    assert incident["kind"] == "email" and "learner" in incident["reason"]
    assert "evil" not in incident["reason"] and "lin@" not in incident["reason"]
    assert "evil.example" not in caplog.text
    assert sorted(row["status"] for row in worker.rows()) == ["incident", "sent", "sent", "sent"]


def test_an_unexpected_error_for_one_email_is_an_incident_and_the_next_email_is_sent(
        service, mail_settings, worker, smtp_server, caplog, clock):
    first = run_process(service, mail_settings, 85, learner=Actor.of("learner-lin", email="lin@example.org"))
    run_process(service, mail_settings, 85, learner=SAM)
    real_send = worker.sender.send

    async def send(email, date):
        if email.to == ("lin@example.org",):
            raise KeyError("secret-password lin@example.org")
        await real_send(email, date)

    worker.sender.send = send
    with caplog.at_level(logging.INFO):
        assert worker.run_once() == 3
        clock.advance(days=1)
        assert worker.run_once() == 0  # the failed email is not retried by itself

    assert len(smtp_server.wait_for(3)) == 3
    (incident,) = service.get_instance(first).open_incidents
    assert "KeyError" in incident["reason"] and "secret-password" not in incident["reason"]
    assert "KeyError" in caplog.text
    assert "secret-password" not in caplog.text and "lin@example.org" not in caplog.text
    assert sorted(row["status"] for row in worker.rows()) == ["incident", "sent", "sent", "sent"]


def test_a_due_timer_that_raises_something_unexpected_is_backed_off_and_the_others_fire(
        settings, service, clock, caplog, monkeypatch):
    broken = waiting_for_assessment(service, settings)
    sams = service.start_instance(SAM, service.get_instance(broken).credential_id)
    from application.bootstrap import open_file_store

    stored = open_file_store(settings).write([b"notes\n"], "text/plain")
    service.attach_file(SAM, sams, file_id=stored.file_id, extension=stored.extension, media_type=stored.media_type,
                        size=stored.size, sha256=stored.sha256, name="notes.txt")
    (submit,) = service.get_instance(sams).open_tasks
    service.complete_task(SAM, submit, {"statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.",
                                        "evidence_files": [str(stored.file_id)]})
    real_fire = service.fire_timer
    calls: list[object] = []

    def fire_timer(instance_id, engine_task_id, now=None):
        if instance_id == broken:
            calls.append(instance_id)
            raise KeyError("nobody expected this")
        return real_fire(instance_id, engine_task_id, now)

    monkeypatch.setattr(service, "fire_timer", fire_timer)
    scheduler = Scheduler(service)
    clock.advance(days=15)
    with caplog.at_level(logging.WARNING):
        assert scheduler.run_once() >= 1
    assert service.get_instance(sams).status == COMPLETED
    assert service.get_instance(broken).status == RUNNING
    assert str(broken) in caplog.text and "KeyError" in caplog.text

    scheduler.run_once()
    scheduler.run_once()
    assert len(calls) == 1  # backed off: no spinning on the broken row

    monkeypatch.setattr(service, "fire_timer", real_fire)
    clock.advance(hours=2)
    scheduler.run_once()
    assert service.get_instance(broken).status == COMPLETED
