"""How often and how long after a failed delivery to try again.

Mail has its own schedule: an SMTP server down for a maintenance window, or for an outage of
hours, must not turn every email into an incident that waits for an admin. Waits start at
``RETRY_BASE`` (30 s) and double up to ``RETRY_CAP`` (an hour) between attempts;
``backoff_delay``'s equal jitter puts each wait in ``[ceiling / 2, ceiling]``, so the
``MAX_ATTEMPTS`` attempts span at least ``RETRY_BUDGET`` (24 hours) and at most about twice
that before the last failure raises an incident. A permanent refusal (5xx) raises one at
once. (``backoff_delay`` is re-exported for the timer scheduler.)
"""

from __future__ import annotations

import random
from datetime import timedelta

from application.backoff import backoff_delay

RETRY_BASE = 30.0
RETRY_CAP = 3600.0
RETRY_BUDGET = timedelta(hours=24)
# 7 waits of 15 s .. 16 min, then 47 of at least 30 min: >= 24 h (tests/unit/test_mail_retry.py).
MAX_ATTEMPTS = 55


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` of one email."""
    return backoff_delay(attempt, RETRY_BASE, RETRY_CAP, rng)


__all__ = ["MAX_ATTEMPTS", "RETRY_BUDGET", "backoff_delay", "retry_delay"]
