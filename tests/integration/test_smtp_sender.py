"""SmtpSender against a real aiosmtpd server started by the test."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timezone
from uuid import UUID

import pytest

from application.mail import MailDeliveryFailed, OutgoingEmail, SmtpSender, message_id_for


pytestmark = pytest.mark.integration

EVENT_ID = UUID("0b3f4b7e-8e9a-4d7c-a2f1-5c6d7e8f9a0b")
SENT_AT = datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)


def outgoing(*to: str, index: int = 0) -> OutgoingEmail:
    return OutgoingEmail(
        message_id=message_id_for(EVENT_ID, index),
        to=to,
        subject="You passed Schweißen, Stufe 2",
        text="Glückwunsch.\n",
        html="<p>Glückwunsch.</p>\n",
        template="credential_passed",
    )


def sender_for(server, timeout: float = 5.0) -> SmtpSender:
    return SmtpSender(
        host=server.host,
        port=server.port,
        username="",
        password="",
        starttls=False,
        mail_from="skillbase <no-reply@skillbase.invalid>",
        timeout=timeout,
    )


def body(message, subtype: str) -> str:
    return message.get_body((subtype,)).get_content().replace("\r\n", "\n")


def send(sender: SmtpSender, email: OutgoingEmail) -> None:
    asyncio.run(sender.send(email, SENT_AT))


def test_the_server_receives_the_email_as_built(smtp_server):
    send(sender_for(smtp_server), outgoing("ada@example.org", "bob@example.org"))

    [received] = smtp_server.wait_for(1)
    message = received.message
    assert received.mail_from == "no-reply@skillbase.invalid"
    assert received.rcpt_tos == ("ada@example.org", "bob@example.org")
    assert message["Message-ID"] == f"<{EVENT_ID}.0@skillbase.invalid>"
    assert message["Date"] == "Fri, 14 Mar 2025 09:26:53 +0000"
    assert message["Subject"] == "You passed Schweißen, Stufe 2"
    assert message["To"] == "ada@example.org, bob@example.org"
    assert message.get_content_type() == "multipart/alternative"
    assert body(message, "plain") == "Glückwunsch.\n"
    assert body(message, "html") == "<p>Glückwunsch.</p>\n"


def test_smtp_down_is_a_temporary_failure_and_sending_works_once_it_is_back(smtp_server):
    sender = sender_for(smtp_server)
    smtp_server.stop()

    with pytest.raises(MailDeliveryFailed) as raised:
        send(sender, outgoing("ada@example.org"))
    assert raised.value.permanent is False

    smtp_server.start()
    send(sender, outgoing("ada@example.org"))
    [received] = smtp_server.wait_for(1)
    assert received.message["Message-ID"] == message_id_for(EVENT_ID, 0)


def test_every_recipient_refused_with_550_is_permanent(smtp_server):
    smtp_server.reject("nobody@example.org", "550 5.1.1 No such user")

    with pytest.raises(MailDeliveryFailed) as raised:
        send(sender_for(smtp_server), outgoing("nobody@example.org"))

    assert raised.value.permanent is True
    assert "550 5.1.1 No such user" in raised.value.reason
    assert "nobody" not in raised.value.reason  # reasons end up in published incidents
    assert smtp_server.messages == []


@pytest.mark.parametrize("address", ["jean.o'neil@example.org", '"jean.smith"@example.org', "Jean Smith <JS@example.org>"])
def test_a_refusal_never_names_the_recipient_even_when_the_server_echoes_it(smtp_server, address):
    bare = address.rpartition("<")[2].rstrip(">")
    for form in {bare, bare.replace('"', "")}:  # the server reads "jean.smith" as jean.smith
        smtp_server.reject(form, f"550 5.1.1 <{form.upper()}>: Recipient address rejected")

    with pytest.raises(MailDeliveryFailed) as raised:
        send(sender_for(smtp_server), outgoing(address))

    assert raised.value.reason == "every recipient refused: 550 5.1.1 <<address>>: Recipient address rejected"


def test_a_recipient_refused_with_450_is_temporary(smtp_server):
    smtp_server.reject("busy@example.org", "450 4.2.1 Try again later")

    with pytest.raises(MailDeliveryFailed) as raised:
        send(sender_for(smtp_server), outgoing("busy@example.org"))

    assert raised.value.permanent is False


def test_one_refused_recipient_does_not_fail_the_others(smtp_server):
    smtp_server.reject("nobody@example.org")

    send(sender_for(smtp_server), outgoing("ada@example.org", "nobody@example.org"))

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("ada@example.org",)


def test_a_server_that_never_answers_times_out_as_a_temporary_failure():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts the connection in the kernel but never greets
        host, port = silent.getsockname()
        sender = SmtpSender(host, port, "", "", False, "no-reply@skillbase.invalid", 0.5)

        with pytest.raises(MailDeliveryFailed) as raised:
            send(sender, outgoing("ada@example.org"))

    assert raised.value.permanent is False


def test_the_password_stays_out_of_repr_and_failure_reasons(smtp_server):
    sender = SmtpSender(
        smtp_server.host, smtp_server.port, "mailer", "hunter2-secret", False, "a@b.invalid", 2.0
    )
    smtp_server.stop()

    with pytest.raises(MailDeliveryFailed) as raised:
        send(sender, outgoing("ada@example.org"))

    assert "hunter2-secret" not in repr(sender)
    assert "hunter2-secret" not in raised.value.reason


def test_a_server_that_answers_each_command_just_in_time_is_cut_off_at_the_total_limit():
    """A tarpit: every reply comes within the per-command timeout, the email as a whole would
    take longer than the worker's claim on it (another worker would then send it too)."""
    import threading
    import time

    stop = threading.Event()

    def tarpit(listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(b"220 slow.example ESMTP\r\n")
            connection.settimeout(0.1)
            while not stop.is_set():
                try:
                    data = connection.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                time.sleep(0.4)  # under the 0.5 s a command may take: ~2.5 s for the whole email
                reply = b"354 go on\r\n" if data.upper().startswith(b"DATA") else b"250 ok\r\n"
                if data.upper().startswith(b"EHLO"):
                    reply = b"250-slow.example\r\n250 8BITMIME\r\n"
                connection.sendall(reply)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        host, port = listener.getsockname()
        serving = threading.Thread(target=tarpit, args=(listener,), daemon=True)
        serving.start()
        sender = SmtpSender(host, port, "", "", False, "no-reply@skillbase.invalid", timeout=0.5, total_timeout=1.0)
        started = time.monotonic()
        try:
            with pytest.raises(MailDeliveryFailed) as raised:
                send(sender, outgoing("ada@example.org"))
            took = time.monotonic() - started
        finally:
            stop.set()
            serving.join(5)

    assert took < 2.0
    assert raised.value.permanent is False and raised.value.unreachable
    assert "1 s" in raised.value.reason
