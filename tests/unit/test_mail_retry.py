"""Mail's retry schedule: an SMTP outage of hours is waited out, not turned into incidents."""

from __future__ import annotations

import random

from application.mail import MAX_ATTEMPTS, RETRY_BUDGET, retry_delay


class _Extreme(random.Random):
    def __init__(self, at: float) -> None:
        super().__init__()
        self.at = at

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.at


def span(at: float) -> float:
    """Seconds from the first failed attempt to the last, every wait drawn at ``at`` of its range."""
    return sum(retry_delay(attempt, _Extreme(at)) for attempt in range(1, MAX_ATTEMPTS))


def test_the_attempts_span_at_least_the_budget_and_at_most_about_twice_it():
    budget = RETRY_BUDGET.total_seconds()
    assert budget >= 24 * 3600
    assert budget <= span(0.0) < budget + 3600  # the shortest draws still wait out a day, not much more
    assert span(1.0) <= 2 * budget + 3600


def test_waits_start_at_half_a_minute_and_never_exceed_an_hour():
    assert 15 <= retry_delay(1) <= 30
    assert all(1800 <= retry_delay(attempt) <= 3600 for attempt in range(8, MAX_ATTEMPTS + 1))
