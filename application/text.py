"""Text the stores can hold: PostgreSQL and the event store write text as UTF-8, so an
unpaired surrogate (which only Python code can make) cannot be stored, and PostgreSQL's
``text`` and ``jsonb`` refuse NUL."""

from __future__ import annotations


def utf8_encodable(text: str) -> bool:
    """No unpaired surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> bool:
    """No unpaired surrogate and no NUL: a column or a jsonb value can hold it."""
    return "\x00" not in text and utf8_encodable(text)
