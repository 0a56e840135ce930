"""One read model, one projection class: tables, the events it reads, one handler per event.

A projection is pure: a handler receives the current row of the aggregate the event is
about (``None`` when there is none) and returns the new row (``None`` deletes it). The
runner applies a whole batch of events to rows in memory and writes the changed rows and
the new log position in one transaction, so a projection can stop anywhere and resume,
or be rebuilt from zero with the same result row for row.

A table may also count: ``counts(table, row)`` names the counters a row contributes to;
the runner adds (new contributions - old contributions) to the ``counters`` table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from projections.table import Table

Row = dict[str, Any]
Handler = Callable[[Any, Any, "Row | None"], "Row | None"]


class Projection:
    """Base class. Subclasses set ``name``, ``tables``, and register handlers with ``on``."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    counters: ClassVar[Table | None] = None
    handlers: ClassVar[dict[type, tuple[Table, Handler]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handlers = {}
        for base in reversed(cls.__mro__[1:]):  # a subclass keeps its bases' handlers
            cls.handlers.update(base.__dict__.get("handlers", {}))
        for value in list(cls.__dict__.values()):
            registered = getattr(value, "_handles", None)
            if registered:
                table, event_classes = registered
                for event_class in event_classes:
                    cls.handlers[event_class] = (table, value)

    @classmethod
    def topics(cls) -> list[str]:
        """The stored topics this projection reads (the log is filtered by them)."""
        return sorted(event_class.TOPIC for event_class in cls.handlers)

    @classmethod
    def all_tables(cls) -> tuple[Table, ...]:
        return cls.tables + ((cls.counters,) if cls.counters is not None else ())

    def handler_for(self, event: Any) -> tuple[Table, Handler] | None:
        return self.handlers.get(type(event))

    def counts(self, table: Table, row: Row) -> Iterable[tuple[Any, ...]]:
        """The counter keys ``row`` contributes 1 to. Only for projections with ``counters``."""
        return ()


def on(table: Table, *event_classes: type) -> Callable[[Handler], Handler]:
    """Declares a handler of ``event_classes`` for rows of ``table`` keyed by the event's aggregate."""

    def register(function: Handler) -> Handler:
        function._handles = (table, event_classes)  # type: ignore[attr-defined]
        return function

    return register
