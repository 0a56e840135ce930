"""The public event contract: twelve ``SKILLBASE_WORKFLOW_*`` types, and stored topics.

Every stored domain event class declares two class attributes:

- ``TOPIC``: the stable string stored with the event (``skillbase.workflow/Task.Claimed``).
  eventsourcing resolves stored events by this string, not by the module path, so moving
  or renaming a class never orphans stored events.
- ``EVENT_TYPE``: the one public type it maps to (``SKILLBASE_WORKFLOW_TASK_UPDATED``).

``stored_topic`` builds both from an entity and a fact, so the mapping is explicit in the
class body and checked by a test over every event class.
"""

from __future__ import annotations

from enum import Enum

TOPIC_PREFIX = "skillbase.workflow/"


class Entity(str, Enum):
    DEFINITION = "DEFINITION"
    DEPLOYMENT = "DEPLOYMENT"
    INSTANCE = "INSTANCE"
    TASK = "TASK"


class Change(str, Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


def event_type(entity: Entity, change: Change) -> str:
    return f"SKILLBASE_WORKFLOW_{entity.value}_{change.value}"


EVENT_TYPES: frozenset[str] = frozenset(
    event_type(entity, change) for entity in Entity for change in Change
)

ENTITY_NAMES = {
    Entity.DEFINITION: "definition",
    Entity.DEPLOYMENT: "deployment",
    Entity.INSTANCE: "instance",
    Entity.TASK: "task",
}


def entity_of(event_type_name: str) -> str:
    """``SKILLBASE_WORKFLOW_TASK_UPDATED`` -> ``task`` (the CloudEvents subject prefix)."""
    return event_type_name.split("_")[2].lower()


def aggregate_topic(name: str) -> str:
    return f"{TOPIC_PREFIX}{name}"


def stored_topic(aggregate: str, fact: str) -> str:
    return f"{TOPIC_PREFIX}{aggregate}.{fact}"
