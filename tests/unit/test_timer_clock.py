"""The engine's timers follow the injected clock and never fire by themselves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from application.engine.builtin_templates import load_template
from application.engine.bundle import validate_bundle
from application.engine.clock import as_utc, engine_clock, engine_now
from application.engine.runner import Engine, SpecRef
from application.timers.due import reminder_at

T0 = datetime(2030, 1, 31, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ref() -> SpecRef:
    bundle = validate_bundle(load_template(), max_bytes=1024 * 1024)
    return SpecRef("example", bundle.spec_state, bundle.engine_format)


def waiting_for_assessment(engine: Engine, ref: SpecRef, now: datetime):
    step = engine.start(ref, data={}, now=now)
    (submit,) = step.ready
    data = {"statement": "x" * 30, "evidence_files": []}
    return engine.complete_task(ref, step.engine_state, ref.engine_format, submit.engine_task_id, data, now=now)


def test_the_due_time_is_computed_from_the_injected_clock(ref):
    step = waiting_for_assessment(Engine(), ref, T0)

    (timer,) = step.timers
    assert as_utc(timer["due_at"]) == T0 + timedelta(days=14)


def test_a_timer_long_overdue_by_the_wall_clock_does_not_fire_on_a_normal_step(ref):
    engine = Engine()
    step = waiting_for_assessment(engine, ref, datetime(2000, 1, 1, tzinfo=timezone.utc))

    later = engine.refresh(ref, step.engine_state, ref.engine_format, now=T0)

    assert not later.finished and [t.element_id for t in later.ready] == ["assess_evidence"]


def test_firing_the_timer_ends_the_process_at_end_expired(ref):
    engine = Engine()
    step = waiting_for_assessment(engine, ref, T0)
    (timer,) = step.timers

    fired = engine.fire_timer(ref, step.engine_state, ref.engine_format, timer["engine_task_id"],
                              now=T0 + timedelta(days=14))

    assert fired.finished and (fired.outcome, fired.end_element_id) == ("fail", "end_expired")
    assert engine.fire_timer(ref, fired.engine_state, ref.engine_format, timer["engine_task_id"], now=T0) is None


def test_outside_an_engine_clock_there_is_no_time_to_read():
    with pytest.raises(RuntimeError):
        engine_now()
    with engine_clock(T0):
        assert engine_now() == T0
    with pytest.raises(ValueError):
        with engine_clock(datetime(2030, 1, 1)):
            pass


def test_an_instant_without_offset_is_utc_not_the_servers_zone():
    assert as_utc("2030-01-31T12:00:00") == T0


@pytest.mark.parametrize(
    ("due_in", "lead"),
    [("P14D", timedelta(days=1)), ("PT2H", timedelta(minutes=24)), ("P2D", timedelta(hours=9.6)),
     (None, timedelta(days=1)), ("nonsense", timedelta(days=1))],
)
def test_the_reminder_comes_a_day_before_or_at_80_percent_of_a_shorter_time(due_in, lead):
    assert T0 - reminder_at(T0, due_in) == lead


@pytest.mark.parametrize("expression", ["R/PT0S", "R5/PT0S", "R/2026-01-01T00:00:00Z/PT0S", "R/P0D"])
def test_a_cycle_with_no_period_is_refused(expression) -> None:
    """It was due again at once on every scheduler round, for ever, each firing a stored step."""
    from datetime import datetime, timezone

    from application.engine.clock import _first_cycle

    with pytest.raises(ValueError, match="period above zero"):
        _first_cycle(expression, datetime(2026, 11, 27, tzinfo=timezone.utc))
    assert _first_cycle("R3/PT1H", datetime(2026, 11, 27, tzinfo=timezone.utc))["duration"] == 3600
