"""One email address, exactly as written: the check every address passes before it is used
(a token's ``email`` claim, a group's configured address, a definition's literal recipient).

An address is used only when it reads back as itself. Parsers repair what they cannot read
(``email.utils.parseaddr``, which the SMTP library also uses for the envelope, joins
``lin@exa mple.org`` into ``lin@example.org``, keeps the first of ``evil@x.org, bob``, and
takes ``(bcc: x)`` for a comment), so an address a parser would change is refused: an email
that cannot go to the mailbox named must not go to another one.
"""

from __future__ import annotations

import re
import unicodedata
from email.utils import parseaddr

# Outside a quoted local part these never belong in one address: they separate addresses,
# open comments or routes, or quote.
_SPECIALS = frozenset('()<>[]:;@\\,"')
_NAMED = re.compile(r"(?P<name>[^<>]*?) ?<(?P<address>[^<>]*)>")


def address_problem(address: str, *, named: bool = False) -> str | None:
    """Why ``address`` is not exactly one usable email address, or None when it is.

    The address is ``local@domain``: no whitespace or control characters anywhere, exactly
    one ``@`` with text on both sides, a local part that is either free of ``()<>[]:;@\\,"``
    or quoted whole (``"jean.smith"``), a domain free of those and of ``'``, and nothing a
    parser would read differently. ``named`` also accepts ``Name <local@domain>`` (for
    addresses an admin configures), with a name a parser reads back as written.
    """
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in address):
        return "it contains control characters"
    if named and "<" in address:
        return _named_problem(address)
    if any(char.isspace() for char in address):
        return "it contains whitespace"
    if address.count("@") != 1:
        return "it does not have exactly one '@'"
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        return "it is not an email address"
    if not _quoted(local) and _SPECIALS.intersection(local):
        return "its local part holds a character that separates or comments addresses"
    if _SPECIALS.intersection(domain) or "'" in domain:
        return "its domain holds a character that separates or comments addresses"
    if parseaddr(address) != ("", address):
        return "it does not read back as one address"
    return None


def _quoted(local: str) -> bool:
    inner = local[1:-1]
    return len(local) >= 2 and local[0] == local[-1] == '"' and '"' not in inner and "\\" not in inner


def _named_problem(address: str) -> str | None:
    match = _NAMED.fullmatch(address)
    if match is None:
        return "it is not one 'Name <address>'"
    name, bare = match["name"], match["address"]
    problem = address_problem(bare)
    if problem:
        return problem
    plain = name[1:-1] if _quoted(name) else name
    if not _quoted(name) and _SPECIALS.intersection(name):
        return "its name holds a character that separates or comments addresses; quote it"
    if parseaddr(address) != (plain, bare):
        return "it does not read back as one address"
    return None
