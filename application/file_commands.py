"""Files attached to an instance: the bytes live in the file store, the fact in the log.

The upload path checks permission first, streams the bytes to the store, then records
``FileAttached``. A crash between the two leaves an unreferenced file that housekeeping
removes after its grace period (or that the upload's retry with the same Idempotency-Key and
the same bytes attaches); never a reference to a file that does not exist. Uploads that
attach at the same moment are each tried again on the instance's fresh state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from uuid import UUID

from application.app import WorkflowApplication
from application.database import lock_key
from application.message_commands import retry_on_conflict
from domain.errors import NotFound
from domain.identity import Actor
from domain.instance import DELETED, WorkflowInstance

MAX_NAME = 255
LOG_PAGE = 1000
ATTACH_ATTEMPTS = 10


class FileReference(NamedTuple):
    """One ``FileAttached`` fact of the log: which instance refers to which stored file."""

    instance_id: UUID
    file_id: str
    extension: str
    position: int  # notification id


class FileCommands(WorkflowApplication):
    files_max_per_instance: int | None = 100  # set from settings by bootstrap

    def check_can_upload(self, actor: Actor, instance_id: UUID) -> None:
        """Raises unless ``actor`` may add a file to the instance (before any byte is read)."""
        instance = self.visible_instance(actor, instance_id)
        instance.check_can_attach(actor, max_files=self.files_max_per_instance)

    def attach_file(
        self, actor: Actor, instance_id: UUID, *, file_id: UUID, extension: str, media_type: str,
        size: int, sha256: str, name: str,
    ) -> dict[str, Any]:
        file = {
            "id": str(file_id),
            "extension": extension,
            "media_type": media_type,
            "size": size,
            "sha256": sha256,
            "name": _clean_name(name),
            "uploaded_by": actor.user_id,
        }

        def command() -> dict[str, Any]:
            instance = self.visible_instance(actor, instance_id)
            instance.attach_file(actor, file, max_files=self.files_max_per_instance)
            self.save_all(instance)
            return file

        # Attaching is an append: an upload beside another (several photos at once), or beside
        # any step of the instance, is tried again on the fresh state (its checks with it)
        # rather than answered 409 with its stored bytes thrown away.
        return retry_on_conflict(command, attempts=ATTACH_ATTEMPTS)

    @contextmanager
    def file_lock(self, file_id: UUID | str) -> Iterator[None]:
        """Holds a transaction-scoped advisory lock on one stored file: an upload's retry
        adopting a file and housekeeping deleting it take turns (application/files/housekeeping.py)."""
        datastore = self.recorder.datastore
        with datastore.transaction(commit=False) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(datastore.schema, f"file/{str(file_id).lower()}"),))
            yield

    def readable_file(self, actor: Actor, instance_id: UUID, file_id: str) -> dict[str, Any]:
        """The file's record, if ``actor`` may read it: the learner, an admin, a member of a
        group that has (or had) a task in this instance (once the process gave that group
        work, not merely because the definition has a lane for it), or a user one of its
        tasks is assigned to (a completed task stays with whoever completed it). One answer for a
        missing instance, one the actor may not read and a missing file: the text must not
        tell a learner that another learner's instance exists."""
        try:
            instance = self.get_instance(instance_id)
        except NotFound:
            raise NotFound(f"file {file_id} not found") from None
        file = instance.files.get(str(file_id))
        if file is None or not self._may_read_files(actor, instance):
            raise NotFound(f"file {file_id} not found")
        return file

    def readable_files(self, actor: Actor, instance_id: UUID) -> list[dict[str, Any]]:
        """Every file of the instance, in the order attached, if ``actor`` may read them
        (the same people as ``readable_file``); ``NotFound`` otherwise."""
        instance = self.get_instance(instance_id)
        if not self._may_read_files(actor, instance):
            raise NotFound(f"instance {instance_id} not found")
        return list(instance.files.values())

    def _may_read_files(self, actor: Actor, instance: Any) -> bool:
        if instance.can_view(actor):
            return True
        if instance.status == DELETED:  # admins only, and they can view it
            return False
        tasks = self.get_tasks(list(instance.all_tasks))
        # Whoever a task is assigned to may read what they assess: an admin may
        # reassign a task to someone outside its group, who must see the evidence to do it.
        return any(actor.is_member(task.candidate_group) or task.assignee == actor.user_id for task in tasks)

    def file_references(self, after: int = 0) -> Iterator[FileReference]:
        """Every file the log refers to: each ``FileAttached`` event, read from the
        notification log (filtered on its topic, a page at a time)."""
        topic = WorkflowInstance.FileAttached.TOPIC
        start = after + 1
        while True:
            page = self.recorder.select_notifications(start=start, limit=LOG_PAGE, topics=[topic])
            for notification in page:
                event = self.mapper.to_domain_event(notification)
                file = event.file
                yield FileReference(event.originator_id, str(file["id"]), str(file.get("extension", "")),
                                    notification.id)
            if len(page) < LOG_PAGE:
                return
            start = page[-1].id + 1


def _clean_name(name: str) -> str:
    """A client's file name is metadata only — never part of a path — so it is kept as the
    client sent it (``../../etc/passwd`` included), less control characters, trimmed to
    ``MAX_NAME``. Whoever puts it in a header or a file system makes it safe there."""
    if not isinstance(name, str):
        name = ""
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:MAX_NAME] or "file"
