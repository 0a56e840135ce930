"""Cursor pagination parameters shared by every list endpoint."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size (1-200)")]
WaitFor = Annotated[int | None, QueryParameter(
    ge=0, description="read your writes: wait (up to 5 s) until the list includes the event log position a "
    "command answered with in `Workflow-Log-Position`; 503 if it does not in time, 422 if the event log has "
    "not reached that position")]
