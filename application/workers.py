"""The background workers of one replica: the mail worker and the scheduler, in threads.

``start_workers`` is what the HTTP lifespan (and the CLI) calls; ``stop()`` ends both and
waits for them. Several replicas may each start theirs: one mail worker sends (advisory
lock), every scheduler may fire and the aggregates keep each effect single.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from application.mail_worker import MailWorker
from application.settings import Settings
from application.timers.scheduler import Scheduler


@dataclass
class Workers:
    mail: MailWorker | None
    scheduler: Scheduler | None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)


def start_workers(service: Any, settings: Settings, *, mail: bool = True, timers: bool = True) -> Workers:
    poll = settings.worker_poll_ms / 1000
    workers = Workers(
        mail=MailWorker(service, settings) if mail else None,
        scheduler=Scheduler(service) if timers else None,
    )
    for name, worker in (("mail-worker", workers.mail), ("scheduler", workers.scheduler)):
        if worker is not None:
            thread = threading.Thread(target=worker.run_until, args=(workers._stop, poll), name=name, daemon=True)
            thread.start()
            workers._threads.append(thread)
    return workers
