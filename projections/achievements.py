"""Achievements: the credentials each user passed, with the evidence of the pass.

Every instance has a row from its start (the pass event alone does not say whose it is);
``achieved_at`` is set when it completes with ``pass``, and the partial indexes hold only
those rows. A deleted instance is no longer listed.
"""

from __future__ import annotations

from domain.instance import PASS, WorkflowInstance
from projections.projection import Projection, Row, on
from projections.table import Table

ACHIEVEMENTS = Table(
    name="rm_achievements",
    columns=(
        ("id", "uuid NOT NULL"),
        ("user_id", "text NOT NULL"),
        ("credential_id", "text NOT NULL"),
        ("skill_id", "text NOT NULL"),
        ("achieved_at", "timestamptz"),
        ("evidence", "jsonb NOT NULL"),
    ),
    indexes=(
        "(user_id, achieved_at, id) WHERE achieved_at IS NOT NULL",
        "(credential_id, achieved_at, id) WHERE achieved_at IS NOT NULL",
    ),
)


class Achievements(Projection):
    name = "achievements"
    tables = (ACHIEVEMENTS,)

    @on(ACHIEVEMENTS, WorkflowInstance.Started)
    def started(self, event: WorkflowInstance.Started, row: Row | None) -> Row:
        return {"id": event.originator_id, "user_id": event.user_id, "credential_id": event.credential_id,
                "skill_id": event.skill_id, "achieved_at": None, "evidence": []}

    @on(ACHIEVEMENTS, WorkflowInstance.Completed)
    def completed(self, event: WorkflowInstance.Completed, row: Row | None) -> Row | None:
        if row is None or event.result != PASS:
            return row
        return {**row, "achieved_at": event.timestamp, "evidence": event.evidence}

    @on(ACHIEVEMENTS, WorkflowInstance.Deleted)
    def deleted(self, event: WorkflowInstance.Deleted, row: Row | None) -> Row | None:
        return None
