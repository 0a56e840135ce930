"""Restored spec objects per definition version: versions never change, so one restore
per process and version is enough."""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any

from application.engine import serializer


class SpecCache:
    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._specs: OrderedDict[object, tuple[Any, dict[str, Any]]] = OrderedDict()
        self._lock = Lock()

    def get(self, key: object, spec_state: dict[str, Any], engine_format: str) -> tuple[Any, dict[str, Any]]:
        with self._lock:
            found = self._specs.get(key)
            if found is not None:
                self._specs.move_to_end(key)
                return found
        restored = serializer.restore_spec(spec_state, engine_format)
        with self._lock:
            self._specs[key] = restored
            while len(self._specs) > self._capacity:
                self._specs.popitem(last=False)
        return restored
