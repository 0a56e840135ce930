"""Sends an ``OutgoingEmail`` over SMTP with aiosmtplib.

Failures are sorted into *permanent* (the server refused this message for good: every
recipient or the message data rejected with a 5xx) and *temporary* (retry later:
connection refused or dropped, timeouts, 4xx replies, and server-wide problems such as a
failed login or a refused sender, which an operator fixes rather than the message).
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import parseaddr

import aiosmtplib

from application.mail.message import OutgoingEmail, build_mime

log = logging.getLogger(__name__)


class MailDeliveryFailed(Exception):
    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class SmtpSender:
    def __init__(
        self,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        mail_from: str = "skillbase <no-reply@skillbase.invalid>",
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.starttls = starttls
        self.mail_from = mail_from
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpSender(host={self.host!r}, port={self.port}, username={self.username!r})"

    async def send(self, email: OutgoingEmail, date: datetime) -> None:
        message = build_mime(email, self.mail_from, date)
        try:
            refused, _ = await aiosmtplib.send(
                message,
                sender=parseaddr(self.mail_from)[1],
                recipients=list(email.to),
                hostname=self.host,
                port=self.port,
                username=self.username or None,
                password=self._password or None,
                start_tls=self.starttls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            reason = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in error.recipients)
            raise MailDeliveryFailed(
                f"every recipient refused: {reason}", permanent=all(c >= 500 for c in codes)
            ) from None
        except aiosmtplib.SMTPDataError as error:
            raise MailDeliveryFailed(
                f"message refused: {error.code} {error.message}", permanent=error.code >= 500
            ) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            raise MailDeliveryFailed(f"{type(error).__name__}: {error}", permanent=False) from None
        if refused:
            # Delivered to the others; retrying would send them a duplicate.
            log.warning("email %s not accepted for %s", email.message_id, sorted(refused))
        log.info("email %s sent to %d recipient(s)", email.message_id, len(email.to) - len(refused))
