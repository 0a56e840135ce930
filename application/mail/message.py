"""One outgoing email, and how it becomes a MIME message.

The ``Message-ID`` is derived from the stored event that asked for the email, so a resend
after a crash carries the same id and receiving systems can de-duplicate it.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from uuid import UUID

import msgspec


def message_id_for(event_id: UUID, index: int, domain: str = "skillbase.invalid") -> str:
    """The ``Message-ID`` of the ``index``-th email caused by stored event ``event_id``."""
    if index < 0:
        raise ValueError(f"email index must not be negative, got {index}")
    return f"<{event_id}.{index}@{domain}>"


class OutgoingEmail(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    template: str

    def __post_init__(self) -> None:
        if not self.to:
            raise ValueError(f"email {self.message_id} has no recipients")


def build_mime(email: OutgoingEmail, mail_from: str, date: datetime) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) dated ``date``, never the clock."""
    if date.tzinfo is None:
        raise ValueError("the Date of an email needs a timezone-aware datetime")
    message = EmailMessage()
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(date)
    message["From"] = mail_from
    message["To"] = ", ".join(email.to)
    message["Subject"] = email.subject
    # RFC 3834: machine-sent, so out-of-office responders stay quiet.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message
