"""Housekeeping: the files on disk against the files the log refers to.

- an **orphan** is a file on disk that no ``FileAttached`` event refers to: an upload whose
  attach never happened (a crash between the two, or a refused attach whose delete failed).
  Older than the grace period it is removed; younger, it may be an upload still in flight
  and is kept.
- a **missing** file is one the log refers to but the disk does not have: reported, never
  "fixed" — it is evidence someone relied on, and it needs a person.
- a **partial** is a ``.partial`` left by a crashed write; older than the grace period it is
  swept.

The disk is listed before the log is read, so a file uploaded and attached while this runs
is either in both or too young to be touched. The one old file that can be attached while
this runs is an upload's retry adopting what its first attempt left (the same
Idempotency-Key, days later): the retry touches the file and attaches it under the file's
lock (``lock``), and an orphan is deleted under that lock only if it is still old then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .store import FileStore, ListedFile

DEFAULT_GRACE = timedelta(hours=24)


@dataclass
class Report:
    dry_run: bool
    grace: timedelta
    referenced: int = 0
    on_disk: int = 0
    removed: list[ListedFile] = field(default_factory=list)  # orphans past the grace period
    kept: list[ListedFile] = field(default_factory=list)  # orphans within it
    missing: list[tuple[str, str, Any]] = field(default_factory=list)  # (file id, extension, instance)
    partials: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} orphan {f.file_id}.{f.extension} ({f.size} bytes, written {f.mtime:%Y-%m-%dT%H:%M:%SZ})"
               for f in self.removed]
        out += [f"kept orphan {f.file_id}.{f.extension} (younger than the grace period)" for f in self.kept]
        out += [f"MISSING {file_id}.{ext} referenced by instance {instance}" for file_id, ext, instance in self.missing]
        out += [f"{verb} partial {p.name}" for p in self.partials]
        out.append(
            f"{'dry run: ' if self.dry_run else ''}{self.on_disk} files on disk, {self.referenced} referenced; "
            f"orphans {verb}: {len(self.removed)}, kept: {len(self.kept)}; missing: {len(self.missing)}; "
            f"partials {verb}: {len(self.partials)} (grace {self.grace})"
        )
        return out


def housekeeping(
    store: FileStore,
    references: Callable[[], Iterable[Any]],
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    now: datetime | None = None,
    lock: Callable[[Any], AbstractContextManager[Any]] | None = None,
) -> Report:
    """Compares ``store`` with ``references()`` (items with ``file_id``, ``extension`` and
    ``instance_id``: the log's ``FileAttached`` facts) and cleans up past ``grace``;
    ``lock(file_id)`` is held while an orphan's age is read again and it is deleted."""
    now = now or datetime.now(UTC)
    report = Report(dry_run=dry_run, grace=grace)
    on_disk = list(store.list_files())  # before the log: see the module docstring
    referenced = {(str(r.file_id), r.extension): r.instance_id for r in references()}
    report.on_disk, report.referenced = len(on_disk), len(referenced)
    referenced_ids = {file_id for file_id, _ext in referenced}  # an id on record protects its file
    present = set()
    for listed in on_disk:
        present.add((str(listed.file_id), listed.extension))
        if str(listed.file_id) in referenced_ids:
            continue
        if now - listed.mtime < grace:
            report.kept.append(listed)
            continue
        if dry_run:
            report.removed.append(listed)
            continue
        with lock(listed.file_id) if lock is not None else nullcontext():
            modified = store.modified_at(listed.file_id, listed.extension)
            if modified is not None and now - modified < grace:  # adopted (touched) meanwhile
                report.kept.append(listed)
            elif modified is not None and store.delete(listed.file_id, listed.extension):
                report.removed.append(listed)
    report.missing = [(file_id, ext, instance) for (file_id, ext), instance in referenced.items()
                      if (file_id, ext) not in present]
    report.partials = store.partials(grace) if dry_run else store.sweep_partials(grace)
    return report
