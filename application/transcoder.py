"""Stored events decoded by msgspec instead of the standard library's ``json``.

Every load of an aggregate, every projection batch and every relayed event decodes stored
JSON, and eventsourcing's ``JSONTranscoder`` does it with the pure-Python object hook of
``json``: ~45 µs per event of the example process, most of a relay's or a rebuild's CPU.
This transcoder reads the very same bytes into the very same objects: msgspec parses, then
one walk turns each ``{"_type_": name, "_data_": value}`` into its object, inner ones first,
exactly as the hook did. Encoding is unchanged, so nothing already stored and nothing written
from now on differs (ADR 0009).

Input that msgspec refuses but ``json`` accepts (``NaN``, ``Infinity``, numbers beyond a
double, which ``json.dumps`` may have written for a script's float) falls back to ``json``.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError

_decode = msgspec.json.decode

# Any object with this key and ``_data_`` is read back as an encoded value, by this decoder
# and the library's: data from outside that is stored inside events must not carry it.
RESERVED_KEY = "_type_"
RESERVED_KEY_PROBLEM = f"the key {RESERVED_KEY} is reserved by the event store"


class MsgspecJSONTranscoder(JSONTranscoder):
    def decode(self, data: bytes) -> Any:
        try:
            value = _decode(data)
        except msgspec.DecodeError:
            return super().decode(data)
        kind = type(value)
        if kind is dict:
            return self._revive_dict(value)
        if kind is list:
            self._revive_list(value)
        return value

    def _revive_dict(self, d: dict[str, Any]) -> Any:
        for key, value in d.items():
            kind = type(value)
            if kind is dict:
                d[key] = self._revive_dict(value)
            elif kind is list:
                self._revive_list(value)
        if len(d) == 2 and "_type_" in d and "_data_" in d:
            name = d["_type_"]
            try:
                transcoding = self.names[cast("str", name)]
            except (KeyError, TypeError) as error:
                raise TranscodingNotRegisteredError(
                    f"Data serialized with name '{name}' is not deserializable. "
                    "Please register a custom transcoding for this type."
                ) from error
            return transcoding.decode(d["_data_"])
        return d

    def _revive_list(self, items: list[Any]) -> None:
        for index, value in enumerate(items):
            kind = type(value)
            if kind is dict:
                items[index] = self._revive_dict(value)
            elif kind is list:
                self._revive_list(value)
