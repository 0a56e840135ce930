"""Who may read an instance's evidence: its learner, admins, and members of the groups the
process has actually given work in this instance — not every group with a lane."""

from __future__ import annotations

from typing import Any

import pytest

from application.bootstrap import open_file_store
from domain.errors import NotFound
from domain.identity import Actor
from interface.examples import load_example_catalog

pytestmark = pytest.mark.integration

LEARNER = Actor.of("learner-lin", email="lin@example.org")
ASSESSOR = Actor.of("assessor-ada", "assessor")
OBSERVER = Actor.of("olga", "observer")
ADMIN = Actor.of("admin-avi", "admin")


def test_an_assessor_reads_evidence_only_once_the_instance_has_given_assessors_work(
    app: Any, settings: Any
) -> None:
    _skill, credential = load_example_catalog(app)
    instance_id = app.start_instance(LEARNER, credential)
    stored = open_file_store(settings).write([b"weld photo notes"], "text/plain")
    app.attach_file(LEARNER, instance_id, file_id=stored.file_id, extension=stored.extension,
                    media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="notes.txt")
    file_id = str(stored.file_id)

    # Only the learner's own task exists: assessors have no business here yet.
    for outsider in (ASSESSOR, OBSERVER):
        with pytest.raises(NotFound):
            app.readable_files(outsider, instance_id)
        with pytest.raises(NotFound):
            app.readable_file(outsider, instance_id, file_id)
    assert [f["id"] for f in app.readable_files(LEARNER, instance_id)] == [file_id]
    assert app.readable_file(ADMIN, instance_id, file_id)["id"] == file_id

    (submit,) = app.get_instance(instance_id).open_tasks
    app.complete_task(LEARNER, submit, {"statement": "A fillet weld on 6 mm mild steel.", "evidence_files": [file_id]})

    # The assessment task now exists for the assessor group: its members may read.
    assert app.readable_file(ASSESSOR, instance_id, file_id)["id"] == file_id
    with pytest.raises(NotFound):
        app.readable_file(OBSERVER, instance_id, file_id)
