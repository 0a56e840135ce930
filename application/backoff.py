"""How long to wait before trying again: one rule for every retry in the service (mail
deliveries, timers, the Kafka relay and consumer, projection runners).

Exponential (``base``, ``2*base``, ``4*base`` ... up to ``cap``) with "equal jitter": each
delay lies in ``[ceiling / 2, ceiling]``, so replicas spread out yet never retry in a tight
loop.
"""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 64  # keeps the float finite for absurd attempt numbers


def backoff_delay(
    attempt: int, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first failure)."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    rng = rng or random
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Backoff:
    """``backoff_delay`` for a loop that counts its own failures: ``next`` after each one,
    ``reset`` after a success."""

    def __init__(self, first: float, limit: float) -> None:
        self.first, self.limit = first, limit
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.first, self.limit)

    def reset(self) -> None:
        self.failures = 0
