"""From an ``email`` message of the process to an ``OutgoingEmail``: recipients and content.

Recipients (DESIGN.md, issue 7):
- ``to: learner`` -> the email the learner's token carried when the instance started;
- ``to_group: <group>`` -> the address configured for the group (``group_addresses``);
- ``to: <address>`` -> only when the definition version's author is an admin.

Every address, wherever it comes from (token, settings, definition), must be exactly one
address that reads back as itself (``address_problem``): no control characters (CR/LF would
inject headers such as ``Bcc``), no whitespace, commas or comments a parser would quietly
repair into another mailbox. ``Name <address>`` only for group and literal addresses,
which admins write; a learner's address is the bare address of their token.
Anything that cannot be resolved, or is refused, is a *permanent* failure: retrying will
not fix it, an admin must (the worker raises an incident at once). Reasons never repeat a
refused address or a payload: they end up in published incidents.

A payload may be computed at run time from learner data, so the outbox keeps only the
fields the mail worker uses (``MAIL_FIELDS``), and only as text PostgreSQL can store
(``storable_payload``); a field it had to leave out makes that one email an incident
(``payload_problem``). Templates see the instance's data, never the payload's other keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from application.mail.address import address_problem
from application.mail.message import OutgoingEmail
from application.mail.sender import MailDeliveryFailed
from application.mail.templates import MailTemplates
from application.text import storable_text
from domain.errors import InvalidInput
from domain.identity import group_key

LEARNER = "learner"
MAIL_FIELDS = ("template", "to", "to_group")
UNUSABLE = "unusable"  # the payload fields left out of the outbox, by name


def storable_payload(payload: Any) -> dict[str, Any]:
    """The fields of an email payload the mail worker uses, as a dict ``json.dumps`` and a
    jsonb column both accept: text without NUL characters or unpaired surrogates. Any other
    key (a learner's note, a float that is NaN) is not the mail worker's business and is left
    out; a used field that is not such text is named under ``UNUSABLE`` instead."""
    if not isinstance(payload, dict):
        return {UNUSABLE: ["payload"]}
    kept: dict[str, Any] = {}
    unusable = []
    for field in MAIL_FIELDS:
        value = payload.get(field)
        if value is None:
            continue
        if isinstance(value, str) and storable_text(value):
            kept[field] = value
        else:
            unusable.append(field)
    if unusable:
        kept[UNUSABLE] = unusable
    return kept




def payload_problem(payload: Any) -> str | None:
    """Why the outbox could not keep what the mail worker needs of a payload, or None."""
    unusable = payload.get(UNUSABLE) if isinstance(payload, dict) else ["payload"]
    if not unusable:
        return None
    names = ", ".join(str(name) for name in unusable) if isinstance(unusable, list) else "payload"
    return (f"the email's {names} could not be stored: not text (or not a dict), or text holding a NUL "
            "character or an unpaired surrogate; fix the definition, retrying will not help")


def _checked(address: str, what: str, *, named: bool = False) -> str:
    problem = address_problem(address, named=named)
    if problem:
        raise MailDeliveryFailed(f"{what} is refused: {problem}", permanent=True)
    return address


def recipients(
    payload: Any, *, learner_email: str | None, group_addresses: Mapping[str, str], literal_allowed: bool
) -> tuple[str, ...]:
    if not isinstance(payload, dict):  # its value may be learner data: never in the reason
        raise MailDeliveryFailed(f"an email message needs a dict payload, got {type(payload).__name__}", permanent=True)
    to, group = payload.get("to"), payload.get("to_group")
    if group:
        address = group_addresses.get(group_key(str(group)))
        if not address:
            raise MailDeliveryFailed(f"no address is configured for group {group!r}", permanent=True)
        return (_checked(address, f"the address configured for group {group!r}", named=True),)
    if to == LEARNER:
        if not learner_email:
            raise MailDeliveryFailed("the learner's token carried no email address", permanent=True)
        return (_checked(learner_email, "the learner's email address"),)
    if isinstance(to, str) and to:
        if not literal_allowed:
            raise MailDeliveryFailed(
                "a literal recipient address is allowed only in definitions added by an admin", permanent=True
            )
        return (_checked(to, "the literal recipient address", named=True),)
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
