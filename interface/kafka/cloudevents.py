"""CloudEvents 1.0 over Kafka: the envelope, the structured and binary modes, one error type.

Structured mode: the record value is the whole event as JSON
(``content-type: application/cloudevents+json``). Binary mode: the attributes travel in
``ce_*`` headers, ``content-type`` is the data's media type and the value is the data.

Decoding never raises anything but :class:`UndecodableMessage`, whose ``reason`` says
precisely what is wrong; that reason is what a dead-letter record carries.
A decoded event's ``data`` is the undecoded JSON (:class:`msgspec.Raw`) or, for a non-JSON
binary-mode payload, the value's bytes; typed decoding of ``data`` is the caller's step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_BATCH_CONTENT_TYPE = "application/cloudevents-batch"
_NO_DATA = msgspec.Raw(b"null")

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Headers = Sequence[tuple[str, bytes | None]]


class UndecodableMessage(Exception):
    """A Kafka record that is not a usable CloudEvent; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True):
    specversion: Literal["1.0"] = "1.0"
    type: NonEmpty
    source: NonEmpty
    id: NonEmpty
    time: Timestamp | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    # Decoded: msgspec.Raw (JSON) or bytes. Encoded: anything msgspec can encode.
    data: Any = None


class _Structured(msgspec.Struct, frozen=True, kw_only=True):
    """The wire shape read in structured mode: like CloudEvent, with ``data`` left raw."""

    specversion: Literal["1.0"]
    type: NonEmpty
    source: NonEmpty
    id: NonEmpty
    time: Timestamp | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    data: msgspec.Raw = _NO_DATA


class _Outgoing(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The wire shape written in structured mode: absent optional attributes are omitted."""

    specversion: str
    type: str
    source: str
    id: str
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    data: Any = None


_structured = msgspec.json.Decoder(_Structured)
_encoder = msgspec.json.Encoder()
_ATTRIBUTES = ("specversion", "type", "source", "id", "time", "subject")


def is_json(content_type: str | None) -> bool:
    """True for ``application/json``, ``text/json`` and any ``+json`` media type."""
    if content_type is None:
        return True  # CloudEvents: no datacontenttype means JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media in {"application/json", "text/json"} or media.endswith("+json")


def decode_structured(value: bytes | None) -> CloudEvent:
    if not value:
        raise UndecodableMessage(
            "empty value: expected a CloudEvent in structured JSON"
        )
    try:
        wire = _structured.decode(value)
    except msgspec.ValidationError as error:
        raise UndecodableMessage(f"invalid CloudEvent: {error}") from None
    except msgspec.DecodeError as error:
        raise UndecodableMessage(f"bad JSON: {error}") from None
    return CloudEvent(
        type=wire.type,
        source=wire.source,
        id=wire.id,
        time=wire.time,
        subject=wire.subject,
        datacontenttype=wire.datacontenttype,
        data=None if wire.data is _NO_DATA else wire.data,
    )


def decode_binary(headers: Headers, value: bytes | None) -> CloudEvent:
    attributes: dict[str, str] = {}
    content_type = None
    for name, raw in headers:
        key = name.lower()
        if key.startswith("ce_"):
            attribute = key[3:]
        elif key == "content-type":
            attribute = "datacontenttype"
        else:
            continue
        text = _header_text(name, raw)
        if attribute in attributes or (attribute == "datacontenttype" and content_type):
            raise UndecodableMessage(f"duplicate header `{name}`")
        if attribute == "datacontenttype":
            content_type = text
        elif attribute in _ATTRIBUTES:
            attributes[attribute] = text
    for required in ("specversion", "type", "source", "id"):
        if required not in attributes:
            raise UndecodableMessage(f"missing header `ce_{required}` (binary mode)")
    if value is None:
        data: Any = None
    elif is_json(content_type):
        data = msgspec.Raw(value)
    else:
        data = bytes(value)
    try:
        return msgspec.convert(
            {**attributes, "datacontenttype": content_type, "data": data}, CloudEvent
        )
    except msgspec.ValidationError as error:
        message = str(error)
        for attribute in _ATTRIBUTES:
            message = message.replace(f"`$.{attribute}`", f"header `ce_{attribute}`")
        raise UndecodableMessage(f"invalid CloudEvent: {message}") from None


def decode_message(headers: Headers, value: bytes | None) -> CloudEvent:
    """Chooses the mode the way the CloudEvents Kafka binding says.

    ``content-type: application/cloudevents...`` means structured; otherwise a
    ``ce_specversion`` header means binary; a record with neither is read as structured
    JSON (producers that set no headers at all are common).
    """
    content_type = binary = None
    for name, raw in headers:
        key = name.lower()
        if key == "content-type":
            content_type = _header_text(name, raw).split(";", 1)[0].strip().lower()
        elif key == "ce_specversion":
            binary = True
    if content_type is not None and content_type.startswith(_BATCH_CONTENT_TYPE):
        raise UndecodableMessage(
            f"unsupported content-type `{content_type}` (batched mode)"
        )
    if content_type is not None and content_type.startswith("application/cloudevents"):
        if content_type != STRUCTURED_CONTENT_TYPE:
            raise UndecodableMessage(
                f"unsupported structured content-type `{content_type}`"
            )
        return decode_structured(value)
    if binary:
        return decode_binary(headers, value)
    return decode_structured(value)


def encode_structured(event: CloudEvent) -> bytes:
    """The event as structured-mode JSON; ``data`` may be a Struct, dict or msgspec.Raw."""
    if isinstance(event.data, bytes | bytearray | memoryview):
        raise TypeError("binary data cannot be sent in structured JSON mode")
    return _encoder.encode(_Outgoing(**msgspec.structs.asdict(event)))


def _header_text(name: str, raw: bytes | None) -> str:
    if raw is None:
        raise UndecodableMessage(f"header `{name}` has no value")
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as error:
        raise UndecodableMessage(
            f"header `{name}` is not UTF-8 (byte {error.start})"
        ) from None
