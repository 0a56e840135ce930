"""Sends an ``OutgoingEmail`` over SMTP with aiosmtplib.

Failures are sorted into *permanent* (the server refused this message for good: every
recipient or the message data rejected with a 5xx) and *temporary* (retry later:
connection refused or dropped, timeouts, 4xx replies, and server-wide problems such as a
failed login or a refused sender, which an operator fixes rather than the message).

A failure's reason ends up in a published incident, so it never names a recipient: it
holds SMTP codes and the server's text, with every recipient address the server may echo
replaced by ``<address>`` (``without_addresses``).

Internationalised addresses: a recipient's domain that is a valid IDNA 2008 name is sent in
its ASCII form, which every server takes. A local part outside ASCII, or a domain with no
such form, needs a server that offers SMTPUTF8 (RFC 6531); one that does not never will for
this email, so that is a permanent failure (an incident at once), not a day of retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import aiosmtplib
import idna
import msgspec

from application.mail.message import OutgoingEmail, build_mime

log = logging.getLogger(__name__)


class MailDeliveryFailed(Exception):
    """``permanent``: the server refused it for good (5xx); ``unreachable``: no server
    answered (connecting, the greeting, a dropped connection), so nothing else will go now."""

    def __init__(self, reason: str, permanent: bool, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.unreachable = unreachable


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
        total_timeout: float = 120.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.starttls = starttls
        self.mail_from = mail_from
        self.timeout = timeout  # each exchange with the server
        # The whole email: a server that answers each command just within ``timeout`` would
        # otherwise hold one email past the worker's claim on it, and another worker would
        # send it beside this one (MailWorker checks that its lease is longer).
        self.total_timeout = total_timeout

    def __repr__(self) -> str:
        return f"SmtpSender(host={self.host!r}, port={self.port}, username={self.username!r})"

    async def send(self, email: OutgoingEmail, date: datetime) -> None:
        given = email.to
        email = msgspec.structs.replace(email, to=tuple(ascii_domain(address) for address in given))
        message = build_mime(email, self.mail_from, date)
        try:
            async with asyncio.timeout(self.total_timeout):
                refused, _ = await self._send(message, email, given)
        except TimeoutError:
            raise MailDeliveryFailed(
                f"the server took more than {self.total_timeout:g} s for one email", permanent=False, unreachable=True
            ) from None
        if refused:
            # Delivered to the others; retrying would send them a duplicate.
            log.warning("email %s not accepted for %d of its recipients", email.message_id, len(refused))
        log.info("email %s sent to %d recipient(s)", email.message_id, len(email.to) - len(refused))

    async def _send(
        self, message: EmailMessage, email: OutgoingEmail, given: tuple[str, ...]
    ) -> tuple[dict[str, Any], str]:
        """One SMTP exchange; its failures sorted as the module says."""
        addresses = (*given, *email.to)  # a server may echo either form
        try:
            return await aiosmtplib.send(
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
            replies = dict.fromkeys(f"{r.code} {r.message}" for r in error.recipients)  # each once, in order
            raise MailDeliveryFailed(
                without_addresses(f"every recipient refused: {'; '.join(replies)}", addresses),
                permanent=all(c >= 500 for c in codes),
            ) from None
        except aiosmtplib.SMTPDataError as error:
            raise MailDeliveryFailed(
                without_addresses(f"message refused: {error.code} {error.message}", addresses),
                permanent=error.code >= 500,
            ) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected,
                OSError) as error:
            raise MailDeliveryFailed(
                without_addresses(f"{type(error).__name__}: {error}", addresses), permanent=False, unreachable=True
            ) from None
        except aiosmtplib.SMTPNotSupported as error:
            # Raised before anything is sent when an address needs SMTPUTF8 and the server
            # does not offer it: this email can never go through this server.
            raise MailDeliveryFailed(
                without_addresses(f"a recipient's address is not ASCII and the server does not offer SMTPUTF8: "
                                  f"{error}", addresses),
                permanent=True,
            ) from None
        except aiosmtplib.SMTPException as error:
            raise MailDeliveryFailed(
                without_addresses(f"{type(error).__name__}: {error}", addresses), permanent=False
            ) from None


def ascii_domain(address: str) -> str:
    """``address`` with its domain in ASCII (``lin@bücher.example`` → ``lin@xn--bcher-kva.example``,
    also inside ``Name <…>``) when the domain is a valid IDNA 2008 name exactly as written
    (less case); the rest as written. No other mapping: UTS 46 would drop a zero-width space
    or fold a fullwidth letter, and send to another mailbox than the one checked. A domain
    with no such form (an emoji, an invisible character) goes as written, which needs a
    server that offers SMTPUTF8."""
    named = address.endswith(">") and "<" in address
    head, bare = (address[:address.rindex("<") + 1], address[address.rindex("<") + 1:-1]) if named else ("", address)
    local, at, domain = bare.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        encoded = idna.encode(domain.lower(), uts46=False).decode("ascii")
    except idna.IDNAError:
        return address
    return f"{head}{local}@{encoded}{'>' if named else ''}"


def without_addresses(text: str, addresses: Iterable[str]) -> str:
    """``text`` with each of ``addresses`` replaced by ``<address>``, literally and whatever
    the case, in every form a server may echo: as given, its bare address, and a quoted local
    part with and without its quotes."""
    forms: set[str] = set()
    for address in addresses:
        bare = parseaddr(address)[1] or address
        forms.update({address, bare})
        local, at, domain = bare.rpartition("@")
        if at and len(local) > 1 and local.startswith('"') and local.endswith('"'):
            forms.add(f"{local[1:-1]}@{domain}")
    for form in sorted(filter(None, forms), key=len, reverse=True):  # longest first: no partial leftovers
        text = re.sub(re.escape(form), "<address>", text, flags=re.IGNORECASE)
    return text
