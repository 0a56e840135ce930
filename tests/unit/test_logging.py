"""The service's JSON logs leave out SpiffWorkflow's per-step task data unless debugging."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from interface.http.observability import configure_json_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root, spiff = logging.getLogger(), logging.getLogger("spiff")
    handlers, levels = root.handlers[:], (root.level, spiff.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    spiff.setLevel(levels[1])


def test_task_state_changes_with_their_data_are_not_logged_at_info(restored_logging: None) -> None:
    configure_json_logging("INFO")
    assert not logging.getLogger("spiff.task").isEnabledFor(logging.INFO)
    assert logging.getLogger("spiff.task").isEnabledFor(logging.WARNING)
    assert logging.getLogger("skillbase.workflow.access").isEnabledFor(logging.INFO)


def test_debug_logs_them(restored_logging: None) -> None:
    logging.getLogger("spiff").setLevel(logging.NOTSET)
    configure_json_logging("DEBUG")
    assert logging.getLogger("spiff.task").isEnabledFor(logging.INFO)
