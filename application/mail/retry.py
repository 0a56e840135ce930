"""How long to wait before the next attempt at a failed delivery."""

from __future__ import annotations

import random

MAX_ATTEMPTS = 8

_MAX_DOUBLINGS = 64  # keeps the float finite for absurd attempt numbers


def backoff_delay(
    attempt: int, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first failure).

    Exponential (``base``, ``2*base``, ``4*base`` ... up to ``cap``) with "equal jitter":
    the result lies in ``[ceiling / 2, ceiling]``, so replicas spread out yet never retry
    in a tight loop.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    rng = rng or random
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
