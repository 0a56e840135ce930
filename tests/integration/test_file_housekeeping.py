"""``skillbase-workflow files housekeeping`` on a real JuiceFS volume and the event log:
orphans past the grace period go, younger ones stay, missing files are reported, stale
partials are swept; ``--dry-run`` changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from application.bootstrap import open_file_store
from application.files.housekeeping import housekeeping
from domain.identity import Actor
from interface.examples import load_example_catalog

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIN = Actor.of("learner-lin")
TWO_DAYS = 2 * 24 * 3600


@pytest.fixture
def on_jfs(settings: Any, juicefs_mount: Path, request: pytest.FixtureRequest) -> Any:
    """Settings with a file store of this test's own, in a directory on the JuiceFS mount (not
    the mount point itself, so not checked as one: other tests share the volume)."""
    root = juicefs_mount / "housekeeping" / f"{request.node.name}-{uuid4().hex[:8]}"
    root.mkdir(parents=True)
    return msgspec.structs.replace(settings, files_root=str(root), files_require_mount=False)


def attached(app: Any, store: Any, instance_id: Any, data: bytes) -> Any:
    stored = store.write([data], "text/plain")
    app.attach_file(LIN, instance_id, file_id=stored.file_id, extension=stored.extension,
                    media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="notes.txt")
    return stored


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def run_cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ,
           "SKILLBASE_WORKFLOW_DATA_DIR": settings.data_dir,
           "SKILLBASE_WORKFLOW_DATABASE_HOST": settings.database_host,
           "SKILLBASE_WORKFLOW_DATABASE_PORT": str(settings.database_port),
           "SKILLBASE_WORKFLOW_DATABASE_NAME": settings.database_name,
           "SKILLBASE_WORKFLOW_DATABASE_SCHEMA": settings.database_schema,
           "SKILLBASE_WORKFLOW_FILES_ROOT": settings.files_root,
           "SKILLBASE_WORKFLOW_FILES_REQUIRE_MOUNT": str(settings.files_require_mount).lower()}
    return subprocess.run([sys.executable, "-m", "interface.cli", "files", "housekeeping", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_housekeeping_removes_old_orphans_reports_missing_files_and_sweeps_partials(app, on_jfs):
    _skill, credential = load_example_catalog(app)
    instance_id = app.start_instance(LIN, credential)
    store = open_file_store(on_jfs)

    kept = attached(app, store, instance_id, b"referenced")
    age(kept.path, TWO_DAYS)  # old, but referenced: never touched
    old_orphan = store.write([b"upload whose attach never happened"], "text/plain")
    age(old_orphan.path, TWO_DAYS)
    young_orphan = store.write([b"maybe still being attached"], "text/plain")
    lost = attached(app, store, instance_id, b"lost")
    os.unlink(lost.path)
    old_partial = store.directory / f".{uuid4()}.pdf.partial"
    old_partial.write_bytes(b"half")
    age(old_partial, TWO_DAYS)
    young_partial = store.directory / f".{uuid4()}.pdf.partial"
    young_partial.write_bytes(b"in flight")
    before = sorted(os.listdir(store.directory))

    dry = run_cli(on_jfs, "--dry-run", "--grace", "24h")

    assert dry.returncode == 2, dry.stderr  # a referenced file is missing
    assert sorted(os.listdir(store.directory)) == before
    assert f"would remove orphan {old_orphan.file_id}.txt" in dry.stdout
    assert f"kept orphan {young_orphan.file_id}.txt" in dry.stdout
    assert f"MISSING {lost.file_id}.txt referenced by instance {instance_id}" in dry.stdout
    assert f"would remove partial {old_partial.name}" in dry.stdout
    assert "dry run: 3 files on disk, 2 referenced" in dry.stdout

    done = run_cli(on_jfs, "--grace", "24h")

    assert done.returncode == 2, done.stderr
    assert f"removed orphan {old_orphan.file_id}.txt" in done.stdout
    assert f"removed partial {old_partial.name}" in done.stdout
    assert f"MISSING {lost.file_id}.txt" in done.stdout
    assert "orphans removed: 1, kept: 1; missing: 1; partials removed: 1" in done.stdout
    assert sorted(os.listdir(store.directory)) == sorted(
        [kept.path.name, young_orphan.path.name, young_partial.name])

    with store.open(kept.file_id, "txt") as opened:
        assert opened.read() == b"referenced"


def test_a_clean_store_reports_nothing_to_do(app, on_jfs):
    _skill, credential = load_example_catalog(app)
    instance_id = app.start_instance(LIN, credential)
    store = open_file_store(on_jfs)
    attached(app, store, instance_id, b"a")
    attached(app, store, instance_id, b"b")

    done = run_cli(on_jfs, "--grace", "0s")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "2 files on disk, 2 referenced; orphans removed: 0, kept: 0; missing: 0; partials removed: 0 (grace 0:00:00)"]


def test_references_come_from_every_file_attached_event_of_the_log(app, on_jfs):
    _skill, credential = load_example_catalog(app)
    store = open_file_store(on_jfs)
    instances = [app.start_instance(Actor.of(f"learner-{n}"), credential) for n in range(3)]
    files = {attached_as(app, store, Actor.of(f"learner-{n}"), instance_id).file_id: instance_id
             for n, instance_id in enumerate(instances) for _ in range(2)}

    references = list(app.file_references())

    assert {r.file_id: r.instance_id for r in references} == {str(k): v for k, v in files.items()}
    assert [r.position for r in references] == sorted(r.position for r in references)
    last = references[2].position
    assert [r.file_id for r in app.file_references(after=last)] == [r.file_id for r in references[3:]]
    report = housekeeping(store, app.file_references, grace=timedelta(0))
    assert (report.on_disk, report.referenced, report.removed, report.missing) == (6, 6, [], [])


def attached_as(app: Any, store: Any, actor: Actor, instance_id: Any) -> Any:
    stored = store.write([os.urandom(64)], "text/plain")
    app.attach_file(actor, instance_id, file_id=stored.file_id, extension=stored.extension,
                    media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="n.txt")
    return stored


def test_the_store_gone_is_an_error_and_nothing_is_removed(app, settings, tmp_path):
    empty_mount_point = tmp_path / "jfs"
    empty_mount_point.mkdir()
    unmounted = msgspec.structs.replace(settings, files_root=str(empty_mount_point), files_require_mount=True)

    done = run_cli(unmounted)

    assert done.returncode == 1
    assert "not mounted" in done.stderr
