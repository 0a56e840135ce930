"""The scheduler: fires what fell due by the application's clock, and delivers kept messages.

Every replica may run one. Each round reads the log into the due-times table, then runs
the command of every due row (``fire_timer``, ``remind_task``, ``mark_task_overdue``).
Those commands are idempotent and race on the aggregate's version, so two replicas firing
the same timer record it once. A scheduler that was down finds overdue rows on its first
round and fires them then.

A row whose command raises anything but a ``WorkflowError`` (a bug, a broken instance) is
logged with its instance id and the error's type, backed off (``backoff_delay``, growing
per failure up to an hour) so the scheduler does not spin on it, and the round goes on
with the other rows. Kept messages get the same treatment, per message, in
``deliver_kept_messages``. Losing the database still ends the round.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

from application.database import DATABASE_LOST
from application.mail.retry import backoff_delay
from application.timers.due import OVERDUE, REMINDER, TIMER, DueTimes
from domain.errors import WorkflowError

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 3600.0


class Scheduler:
    def __init__(self, service: Any) -> None:
        self.service = service
        self.due_times = DueTimes(service)

    def run_once(self) -> int:
        """One round; returns how many commands recorded something."""
        self.due_times.catch_up()
        now = self.service.clock()
        done = 0
        for row in self.due_times.due(now):
            try:
                done += bool(self._run(row, now))
            except WorkflowError as error:  # the row's subject is gone or refuses: log, go on
                log.warning("due %s of %s not run: %s", row["kind"], row["key"], error)
            except DATABASE_LOST:
                raise
            except Exception as error:  # noqa: BLE001 -- a poison row: back it off, go on with the others
                self._back_off(row, now, error)
        done += self.service.deliver_kept_messages()
        self.due_times.catch_up()
        return done

    def _back_off(self, row: dict[str, Any], now: Any, error: Exception) -> None:
        def until_after(failures: int) -> Any:
            return now + timedelta(seconds=backoff_delay(failures, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS))

        not_before = self.due_times.back_off(row, until_after)
        log.error("due %s of instance %s (key %s) failed with %s; backed off until %s",
                  row["kind"], row["instance_id"], row["key"], type(error).__name__, not_before.isoformat())

    def _run(self, row: dict[str, Any], now: Any) -> bool:
        if row["kind"] == TIMER:
            return self.service.fire_timer(row["instance_id"], row["key"], now)
        if row["kind"] == REMINDER:
            return self.service.remind_task(UUID(row["key"]), now)
        if row["kind"] == OVERDUE:
            return self.service.mark_task_overdue(UUID(row["key"]), now)
        return False

    def run_until(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the worker
                log.exception("scheduler round failed")
            stop.wait(poll_seconds)
