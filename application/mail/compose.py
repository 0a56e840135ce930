"""From an ``email`` message of the process to an ``OutgoingEmail``: recipients and content.

Recipients (DESIGN.md, issue 7):
- ``to: learner`` -> the email the learner's token carried when the instance started;
- ``to_group: <group>`` -> the address configured for the group (``group_addresses``);
- ``to: <address>`` -> only when the definition version's author is an admin.

Anything that cannot be resolved is a *permanent* failure: retrying will not fix it, an
admin must (the worker raises an incident at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

from application.mail.message import OutgoingEmail
from application.mail.sender import MailDeliveryFailed
from application.mail.templates import MailTemplates
from domain.errors import InvalidInput
from domain.identity import group_key

LEARNER = "learner"


def recipients(
    payload: Any, *, learner_email: str | None, group_addresses: Mapping[str, str], literal_allowed: bool
) -> tuple[str, ...]:
    if not isinstance(payload, dict):
        raise MailDeliveryFailed(f"an email message needs a dict payload, got {payload!r}", permanent=True)
    to, group = payload.get("to"), payload.get("to_group")
    if group:
        address = group_addresses.get(group_key(str(group)))
        if not address:
            raise MailDeliveryFailed(f"no address is configured for group {group!r}", permanent=True)
        return (address,)
    if to == LEARNER:
        if not learner_email:
            raise MailDeliveryFailed("the learner's token carried no email address", permanent=True)
        return (learner_email,)
    if isinstance(to, str) and to:
        if not literal_allowed:
            raise MailDeliveryFailed(
                "a literal recipient address is allowed only in definitions added by an admin", permanent=True
            )
        if "@" not in parseaddr(to)[1]:
            raise MailDeliveryFailed(f"{to!r} is not an email address", permanent=True)
        return (to,)
    raise MailDeliveryFailed("an email message names 'to' or 'to_group'", permanent=True)


def compose(
    templates: MailTemplates, *, message_id: str, payload: Any, to: tuple[str, ...], context: dict[str, Any]
) -> OutgoingEmail:
    template = payload.get("template") if isinstance(payload, dict) else None
    if not isinstance(template, str):
        raise MailDeliveryFailed("an email message names its 'template'", permanent=True)
    try:
        subject, text, html = templates.render(template, context)
    except InvalidInput as error:
        raise MailDeliveryFailed(str(error), permanent=True) from None
    return OutgoingEmail(message_id=message_id, to=to, subject=subject, text=text, html=html, template=template)
