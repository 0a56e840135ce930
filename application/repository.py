"""Aggregates rebuilt from their events without eventsourcing's per-event protocol check.

eventsourcing's ``project_aggregate`` asserts ``isinstance(event, CanMutateProtocol)`` for
every event it applies. That protocol is ``runtime_checkable``, so each check walks its
members through ``typing``: ~40 µs an event, about 6 % of a command's CPU in the example
process (py-spy, in-process). Every event this service stores is one of its own aggregates'
events, each with a ``mutate``: ``replay`` applies them the same way, without the check, and
``Repository`` makes it the default of every load.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventsourcing.application import Repository as LibraryRepository


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """The aggregate after ``events``: each event's ``mutate`` in turn (None: not found)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class Repository(LibraryRepository):
    def get(self, aggregate_id: Any, *, projector_func: Any = replay, **kwargs: Any) -> Any:
        return super().get(aggregate_id, projector_func=projector_func, **kwargs)
