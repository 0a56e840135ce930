"""Cursor pagination parameters shared by every list endpoint."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size (1-200)")]
