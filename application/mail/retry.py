"""How often and how long after a failed delivery to try again."""

from __future__ import annotations

from application.backoff import backoff_delay

MAX_ATTEMPTS = 8

__all__ = ["MAX_ATTEMPTS", "backoff_delay"]
