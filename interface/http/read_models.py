"""The list endpoints' side: ``application.queries`` over the read models, turned into wire
pages, with the caller's visibility applied (a learner lists only their own instances and
tasks, a group member their groups' tasks, admins everything).

Inbox filters the chosen query cannot express are applied to the page it returns, so a page
may hold fewer than ``limit`` items: follow ``next_cursor`` until it is null.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from application.queries import catalog, dashboards, inbox, instances
from application.queries.pagination import Page
from application.queries.store import ReadModelBehind, ReadStore
from domain.errors import InvalidInput, NotAllowed, Problem, Unavailable
from domain.identity import Actor
from interface.http import schemas

_ROW_RENAMES = {"updated_at": "modified_at"}
WAIT_SECONDS = 5.0
T = TypeVar("T")


def patiently(fn: Callable[..., T], *args: Any, wait_for: int | None = None, **kwargs: Any) -> T:
    """With ``wait_for``, a read model that does not exist yet (the projections are starting)
    is waited for too, within the same bound as the position."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            return fn(*args, wait_for=wait_for, **kwargs)
        except ReadModelBehind:
            raise
        except Unavailable:
            if wait_for is None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _struct(kind: type[msgspec.Struct], row: dict[str, Any]) -> Any:
    fields = set(kind.__struct_fields__)
    values = {_ROW_RENAMES.get(k, k): v for k, v in row.items()}
    return msgspec.convert({k: v for k, v in values.items() if k in fields}, kind, from_attributes=True,
                           strict=False)


@dataclass(frozen=True)
class ReadModels:
    store: ReadStore

    @classmethod
    def of(cls, service: Any, *_: Any) -> ReadModels:
        return cls(ReadStore.of(service))

    # -- tasks -----------------------------------------------------------------------------

    def tasks_page(
        self, actor: Actor, *, inbox: str, status: str, credential_id: str | None, skill_id: str | None,
        instance_id: UUID | None, due_before: datetime | None, unassigned: bool | None, cursor: str | None,
        limit: int, wait_for: int | None = None, **_: Any,
    ) -> schemas.TaskPage:
        wanted = {"credential_id": credential_id, "skill_id": skill_id, "instance_id": instance_id}
        common = {"limit": limit, "cursor": cursor, "wait_for": wait_for}
        if due_before is not None and due_before.tzinfo is None:
            due_before = due_before.replace(tzinfo=UTC)  # a time without a zone is UTC, as every time here
        if inbox == "all":
            if not actor.is_admin:
                raise NotAllowed("only an admin can list every task")
            page = _tasks(self.store, status=status, due_before=due_before, **wanted, **common)
        elif inbox == "mine":
            if status == "open" and not any(wanted.values()) and due_before is None:
                page = _my(self.store, actor.user_id, **common)
            else:
                page = _tasks(self.store, status=status, assignee=actor.user_id, due_before=due_before,
                              **wanted, **common)
        else:
            if status != "open":
                raise InvalidInput("a group inbox lists open tasks", [Problem("query:status", "must be open")])
            page = inbox_groups(self.store, sorted(actor.groups), bool(unassigned), **common)
        rows = [row for row in page.items if _matches(row, wanted, due_before, unassigned if inbox == "groups" else None)]
        return schemas.TaskPage(items=[_struct(schemas.Task, row) for row in rows], next_cursor=page.next_cursor)

    # -- instances -------------------------------------------------------------------------

    def instances_page(
        self, actor: Actor, *, status: str | None, credential_id: str | None, user_id: str | None,
        cursor: str | None, limit: int, wait_for: int | None = None, **_: Any,
    ) -> schemas.InstancePage:
        if user_id is not None and user_id != actor.user_id and not actor.is_admin:
            raise NotAllowed("only an admin can list another user's instances")
        owner = user_id if actor.is_admin else actor.user_id
        page = patiently(instances.list_instances, self.store, user_id=owner, status=status, credential_id=credential_id,
                         with_deleted=actor.is_admin,  # a deleted instance is gone for all but the audit
                         limit=limit, cursor=cursor, wait_for=wait_for)
        return schemas.InstancePage(items=[_struct(schemas.InstanceSummary, r) for r in page.items],
                                    next_cursor=page.next_cursor)

    # -- catalog ---------------------------------------------------------------------------

    def definitions_page(self, actor: Actor, *, skill_id: str | None, cursor: str | None, limit: int,
                         wait_for: int | None = None, **_: Any) -> schemas.DefinitionPage:
        page = patiently(catalog.definitions, self.store, skill_id=skill_id, limit=limit, cursor=cursor, wait_for=wait_for)
        return schemas.DefinitionPage(items=[_struct(schemas.Definition, r) for r in page.items],
                                      next_cursor=page.next_cursor)

    def deployments_page(self, actor: Actor, *, cursor: str | None, limit: int, wait_for: int | None = None,
                         **_: Any) -> schemas.DeploymentPage:
        page = patiently(catalog.deployments, self.store, limit=limit, cursor=cursor, wait_for=wait_for)
        items = [_struct(schemas.Deployment, {**r, "pins": [{"credential_id": c, **p} for c, p in
                                                              sorted(r["pins"].items())]}) for r in page.items]
        return schemas.DeploymentPage(items=items, next_cursor=page.next_cursor)

    def dashboard(self, actor: Actor, *, credential_id: str | None, skill_id: str | None,
                  wait_for: int | None = None, **_: Any) -> schemas.Dashboard:
        if (credential_id is None) == (skill_id is None):
            raise InvalidInput("a dashboard is of one credential or one skill",
                               [Problem("$query", "give exactly one of credential_id and skill_id")])
        scope, scope_id = ("credential", credential_id) if credential_id is not None else ("skill", skill_id)
        found = patiently(dashboards.dashboard, self.store, scope, str(scope_id), wait_for=wait_for)
        return _struct(schemas.Dashboard, found)


def _my(store: ReadStore, user_id: str, **common: Any) -> Page:
    return patiently(inbox.my_tasks, store, user_id, **common)


def inbox_groups(store: ReadStore, groups: list[str], unclaimed_only: bool, **common: Any) -> Page:
    return patiently(inbox.group_tasks, store, groups, unclaimed_only=unclaimed_only, **common)


def _tasks(store: ReadStore, **filters: Any) -> Page:
    return patiently(inbox.tasks, store, **filters)


def _matches(row: dict[str, Any], wanted: dict[str, Any], due_before: datetime | None,
             unassigned: bool | None) -> bool:
    if any(value is not None and row.get(name) != value for name, value in wanted.items()):
        return False
    if due_before is not None and (row.get("due_at") is None or row["due_at"] >= due_before):
        return False
    return not (unassigned is False and row.get("assignee") is None)
