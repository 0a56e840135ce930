"""Every read model of the service, by name."""

from __future__ import annotations

from projections.achievements import Achievements
from projections.catalog import Catalog
from projections.dashboards import Dashboards
from projections.inbox import TaskInbox
from projections.instances import Instances
from projections.projection import Projection

PROJECTIONS: dict[str, type[Projection]] = {
    cls.name: cls for cls in (TaskInbox, Instances, Dashboards, Catalog, Achievements)
}


def projection(name: str) -> Projection:
    try:
        return PROJECTIONS[name]()
    except KeyError:
        known = ", ".join(PROJECTIONS)
        raise ValueError(f"unknown projection {name!r} (known: {known})") from None


def selected(names: list[str] | None) -> list[Projection]:
    return [projection(name) for name in (names or list(PROJECTIONS))]
