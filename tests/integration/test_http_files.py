"""Evidence files through HTTP, on a real JuiceFS volume the suite formats and mounts: upload,
list, download with ranges, who may read, what is refused, forms that refer to files, and the
pass event that lists them as evidence."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest

from application.contract import to_cloudevent
from application.queries import audit
from interface.examples import load_example_catalog
from interface.http.testing import ADMIN, ASSESSOR, LEARNER, OTHER_LEARNER, OUTSIDER, api_client, auth

pytestmark = pytest.mark.integration

MB = 1024 * 1024
CREDENTIAL = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
STATEMENT = "My fillet weld on 6 mm mild steel, photographed after cleaning."


@pytest.fixture
def mounted(settings: Any, juicefs_mount: Path) -> Any:
    """The settings, with the file store on the JuiceFS mount (which must be mounted)."""
    return msgspec.structs.replace(settings, files_root=str(juicefs_mount), files_max_bytes=8 * MB)


@pytest.fixture
def client(app: Any, mounted: Any, schema_database: Any) -> Iterator[Any]:
    load_example_catalog(app)
    with api_client(mounted, app, schema_database) as client:
        yield client


def start(client: Any, settings: Any, who: tuple[str, tuple[str, ...]] = LEARNER) -> str:
    started = client.post("/instances", json={"credential_id": CREDENTIAL}, headers=auth(settings, *who))
    assert started.status_code == 201, started.text
    return started.json()["id"]


def upload(client: Any, settings: Any, instance_id: str, data: bytes, media_type: str = "image/jpeg",
           name: str = "weld.jpg", who: tuple[str, tuple[str, ...]] = LEARNER, **headers: str) -> Any:
    return client.post(f"/instances/{instance_id}/files", content=data, headers={
        **auth(settings, *who), "Content-Type": media_type, "X-File-Name": name, **headers})


def on_disk(settings: Any) -> set[str]:
    directory = Path(settings.files_root, "skillbase", "workflow")
    return set(os.listdir(directory)) if directory.exists() else set()


def test_upload_then_download_gives_the_same_bytes_and_sha256(client, app, mounted, juicefs_mount):
    instance_id = start(client, mounted)
    data = os.urandom(3 * MB + 17)
    sha256 = hashlib.sha256(data).hexdigest()

    created = client.post(f"/instances/{instance_id}/files", content=data, headers={
        **auth(mounted, *LEARNER), "Content-Type": "video/mp4",
        "Content-Disposition": "attachment; filename*=UTF-8''Schwei%C3%9Fnaht%20%E2%84%962.mp4"})

    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["media_type"], body["size"], body["sha256"]) == (
        "Schweißnaht №2.mp4", "video/mp4", len(data), sha256)
    assert created.headers["location"] == f"/instances/{instance_id}/files/{body['id']}"
    assert created.headers["etag"] == f'"{sha256}"'
    path = juicefs_mount / "skillbase" / "workflow" / f"{body['id']}.mp4"
    assert path.stat().st_size == len(data)

    got = client.get(created.headers["location"], headers=auth(mounted, *LEARNER))
    assert got.status_code == 200
    assert got.content == data and hashlib.sha256(got.content).hexdigest() == sha256
    assert got.headers["content-type"] == "video/mp4"
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["etag"] == f'"{sha256}"'
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"Schwei_naht _2.mp4\"; filename*=UTF-8''Schwei%C3%9Fnaht%20%E2%84%962.mp4")

    listed = client.get(f"/instances/{instance_id}/files", headers=auth(mounted, *LEARNER)).json()
    assert [(f["id"], f["sha256"], f["uploaded_by"]) for f in listed["items"]] == [(body["id"], sha256, LEARNER[0])]
    not_modified = client.get(created.headers["location"], headers={**auth(mounted, *LEARNER),
                                                                    "If-None-Match": f'"{sha256}"'})
    assert not_modified.status_code == 304 and not_modified.content == b""


def test_the_upload_is_an_instance_event_published_as_a_cloudevent(client, app, mounted):
    instance_id = start(client, mounted)
    file_id = upload(client, mounted, instance_id, b"\xff\xd8\xff photo").json()["id"]

    (attached,) = [e for e in app.events.get(UUID(instance_id)) if type(e).__name__ == "FileAttached"]
    assert attached.file["id"] == file_id and attached.file["sha256"] == hashlib.sha256(b"\xff\xd8\xff photo").hexdigest()
    published = [e for e in audit.global_log(app, limit=1000)
                 if e.subject == f"instance/{instance_id}" and e.data["change"]["fact"] == "FileAttached"]
    assert [e.type for e in published] == ["SKILLBASE_WORKFLOW_INSTANCE_UPDATED"]
    assert published[0].data["change"]["file"]["id"] == file_id
    assert [f["id"] for f in published[0].data["state"]["files"]] == [file_id]
    assert [r.file_id for r in app.file_references()] == [file_id]


def test_range_requests(client, mounted):
    instance_id = start(client, mounted)
    data = os.urandom(2 * MB + 5)
    location = upload(client, mounted, instance_id, data, "application/pdf", "report.pdf").headers["location"]
    learner = auth(mounted, *LEARNER)
    etag = f'"{hashlib.sha256(data).hexdigest()}"'

    def get(range_: str, **headers: str) -> Any:
        return client.get(location, headers={**learner, "Range": range_, **headers})

    first = get("bytes=0-99")
    assert first.status_code == 206 and first.content == data[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{len(data)}"
    assert first.headers["content-length"] == "100"
    assert first.headers["content-type"] == "application/pdf"

    middle = get(f"bytes={MB - 10}-{MB + MB // 2}")  # across the 1 MB read chunks
    assert middle.status_code == 206 and middle.content == data[MB - 10 : MB + MB // 2 + 1]
    tail = get("bytes=-10")
    assert tail.status_code == 206 and tail.content == data[-10:]
    rest = get(f"bytes={len(data) - 3}-")
    assert rest.status_code == 206 and rest.content == data[-3:]
    clamped = get(f"bytes={len(data) - 3}-{len(data) + 1000}")
    assert clamped.status_code == 206 and clamped.headers["content-range"] == f"bytes {len(data) - 3}-{len(data) - 1}/{len(data)}"

    beyond = get(f"bytes={len(data)}-")
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert beyond.headers["content-type"].startswith("application/problem+json")
    assert beyond.json()["type"] == "/problems/range-not-satisfiable"

    assert get("bytes=0-1,5-9").status_code == 200  # several ranges: the whole file
    assert get("bytes=0-9", **{"If-Range": '"an-old-version"'}).content == data  # changed: the whole file
    assert get("bytes=0-9", **{"If-Range": etag}).content == data[:10]


def test_who_may_read_and_upload(client, mounted):
    instance_id = start(client, mounted)
    location = upload(client, mounted, instance_id, b"%PDF-1.7 mine", "application/pdf", "mine.pdf").headers["location"]
    # No assessor task in this instance yet: assessors learn nothing about it.
    assert client.get(location, headers=auth(mounted, *ASSESSOR)).status_code == 404
    assert client.get(f"/instances/{instance_id}/files", headers=auth(mounted, *ASSESSOR)).status_code == 404
    learner = auth(mounted, *LEARNER)
    submit = client.get(f"/instances/{instance_id}", headers=learner).json()["open_tasks"][0]["id"]
    submitted = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "A fillet weld on 6 mm mild steel.", "evidence_files": [location.rsplit("/", 1)[1]]}})
    assert submitted.status_code == 200, submitted.text

    for who in (LEARNER, ASSESSOR, ADMIN):  # the learner, a member of a group with a task, an admin
        assert client.get(location, headers=auth(mounted, *who)).content == b"%PDF-1.7 mine", who
        assert client.get(f"/instances/{instance_id}/files", headers=auth(mounted, *who)).status_code == 200
    for who in (OTHER_LEARNER, OUTSIDER):
        refused = client.get(location, headers=auth(mounted, *who))
        assert refused.status_code == 404, who
        assert refused.json()["type"] == "/problems/not-found"
        assert client.get(f"/instances/{instance_id}/files", headers=auth(mounted, *who)).status_code == 404
    unknown_file = f"/instances/{instance_id}/files/00000000-0000-4000-8000-000000000000"
    assert client.get(unknown_file, headers=auth(mounted, *LEARNER)).status_code == 404
    # Another learner asking for a file of this instance and of no instance gets the same
    # answer: the text said "instance … not found" for the one that does not exist.
    nowhere = "/instances/00000000-0000-4000-8000-000000000001/files/00000000-0000-4000-8000-000000000000"
    there, absent = (client.get(path, headers=auth(mounted, *OTHER_LEARNER)) for path in (unknown_file, nowhere))
    assert there.status_code == absent.status_code == 404
    assert there.json()["detail"] == absent.json()["detail"]
    assert client.get(location).status_code == 401

    before = on_disk(mounted)
    # Only the learner and admins upload; the others learn nothing about the instance.
    assert upload(client, mounted, instance_id, b"x", who=OTHER_LEARNER).status_code == 404
    assert upload(client, mounted, instance_id, b"x", who=ASSESSOR).status_code == 404
    assert upload(client, mounted, instance_id, b"admin's", who=ADMIN).status_code == 201
    assert len(on_disk(mounted) - before) == 1
    cancelled = client.post(f"/instances/{instance_id}/cancel", headers=auth(mounted, *LEARNER), json={"reason": "x"})
    assert cancelled.status_code == 200
    assert upload(client, mounted, instance_id, b"late").status_code == 409


def test_a_client_file_name_is_metadata_only(client, mounted, juicefs_mount):
    instance_id = start(client, mounted)
    before = on_disk(mounted)

    created = upload(client, mounted, instance_id, b"root:x:0:0", "text/plain", name="../../etc/passwd")
    quoted = upload(client, mounted, instance_id, b"x", "text/plain",
                    name="", **{"Content-Disposition": 'attachment; filename="..\\\\..\\\\boot.ini"'})

    assert created.status_code == 201 and quoted.status_code == 201
    assert created.json()["name"] == "../../etc/passwd"
    assert quoted.json()["name"] == "..\\..\\boot.ini"
    added = on_disk(mounted) - before
    assert added == {f"{created.json()['id']}.txt", f"{quoted.json()['id']}.txt"}
    assert not (juicefs_mount / "etc").exists() and not (juicefs_mount / "skillbase" / "etc").exists()
    got = client.get(created.headers["location"], headers=auth(mounted, *LEARNER))
    assert got.headers["content-disposition"] == "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"
    got = client.get(quoted.headers["location"], headers=auth(mounted, *LEARNER))
    assert got.headers["content-disposition"] == "attachment; filename=\"boot.ini\"; filename*=UTF-8''boot.ini"


def test_over_the_size_limit_is_413_before_or_while_reading(client, app, mounted):
    instance_id = start(client, mounted)
    before = on_disk(mounted)

    announced = upload(client, mounted, instance_id, os.urandom(8 * MB + 1), "video/mp4")
    assert announced.status_code == 413
    problem = announced.json()
    assert problem["type"] == "/problems/too-large" and str(8 * MB) in problem["detail"]

    def unannounced() -> Iterator[bytes]:  # chunked: no Content-Length, found while streaming
        for _ in range(9):
            yield os.urandom(MB)

    streamed = client.post(f"/instances/{instance_id}/files", content=unannounced(), headers={
        **auth(mounted, *LEARNER), "Content-Type": "video/mp4"})
    assert streamed.status_code == 413 and streamed.json()["type"] == "/problems/too-large"
    assert on_disk(mounted) == before  # neither a file nor a partial
    assert app.get_instance(UUID(instance_id)).files == {}
    assert upload(client, mounted, instance_id, os.urandom(8 * MB), "video/mp4").status_code == 201  # at the limit


def test_a_type_outside_the_allow_list_is_415(client, mounted):
    instance_id = start(client, mounted)
    before = on_disk(mounted)
    for media_type in ("application/x-msdownload", "text/html", "image/gif"):  # gif: known, not allowed
        refused = upload(client, mounted, instance_id, b"MZ...", media_type, "setup.exe")
        assert refused.status_code == 415, media_type
        assert refused.json()["type"] == "/problems/unsupported-media-type"
        assert "image/jpeg" in refused.json()["detail"]
    no_type = client.post(f"/instances/{instance_id}/files", content=b"x", headers=auth(mounted, *LEARNER))
    assert no_type.status_code == 415
    assert on_disk(mounted) == before


def test_an_empty_file_is_refused(client, mounted):
    instance_id = start(client, mounted)
    before = on_disk(mounted)
    empty = upload(client, mounted, instance_id, b"", "text/plain")
    assert empty.status_code == 422 and empty.json()["errors"][0]["path"] == "$"
    assert on_disk(mounted) == before


def test_an_instance_holds_a_bounded_number_of_files(client, app, mounted, monkeypatch):
    """Each file is an event every later load of the instance decodes: past the limit an
    upload is a 409, refused before a byte is stored."""
    monkeypatch.setattr(app, "files_max_per_instance", 3)
    instance_id = start(client, mounted)
    for n in range(3):
        assert upload(client, mounted, instance_id, f"photo {n}".encode()).status_code == 201
    before = on_disk(mounted)
    refused = upload(client, mounted, instance_id, b"one too many")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == "the instance already holds 3 files, the most one instance may hold"
    assert on_disk(mounted) == before
    assert len(app.get_instance(UUID(instance_id)).files) == 3
    other = start(client, mounted, OTHER_LEARNER)  # the limit is per instance
    assert upload(client, mounted, other, b"first", who=OTHER_LEARNER).status_code == 201


def test_the_mount_gone_is_503_and_nothing_is_written(app, settings, schema_database, tmp_path):
    load_example_catalog(app)
    empty_mount_point = tmp_path / "jfs"  # a directory where the volume should be mounted
    empty_mount_point.mkdir()
    unmounted = msgspec.structs.replace(settings, files_root=str(empty_mount_point))
    with api_client(unmounted, app, schema_database) as client:
        instance_id = start(client, unmounted)
        refused = upload(client, unmounted, instance_id, b"\xff\xd8\xff photo")
        assert refused.status_code == 503
        assert refused.json()["type"] == "/problems/unavailable" and "not mounted" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        assert list(empty_mount_point.iterdir()) == []
        assert app.get_instance(UUID(instance_id)).files == {}


def test_a_download_while_the_mount_is_gone_is_503(client, app, mounted, settings, schema_database, tmp_path):
    instance_id = start(client, mounted)
    location = upload(client, mounted, instance_id, b"\xff\xd8\xff photo").headers["location"]
    empty_mount_point = tmp_path / "jfs"
    empty_mount_point.mkdir()
    with api_client(msgspec.structs.replace(mounted, files_root=str(empty_mount_point)), app,
                    schema_database) as elsewhere:
        refused = elsewhere.get(location, headers=auth(mounted, *LEARNER))
    assert refused.status_code == 503 and refused.json()["type"] == "/problems/unavailable"


# -- forms that refer to files ---------------------------------------------------------------


def only_open_task(client: Any, headers: dict[str, str], instance_id: str) -> str:
    (task_id,) = client.get(f"/instances/{instance_id}", headers=headers).json()["open_task_ids"]
    return task_id


def test_a_form_accepts_only_files_of_its_own_instance(client, app, mounted):
    learner = auth(mounted, *LEARNER)
    mine, other = start(client, mounted), start(client, mounted)
    own_file = upload(client, mounted, mine, b"\xff\xd8\xff mine").json()
    foreign_file = upload(client, mounted, other, b"\xff\xd8\xff other").json()
    submit = only_open_task(client, learner, mine)

    refused = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": STATEMENT, "evidence_files": [own_file["id"], foreign_file["id"]]}})
    assert refused.status_code == 422
    assert refused.json()["type"] == "/problems/invalid-input"
    assert refused.json()["errors"] == [{"path": "$.evidence_files[1]",
                                         "message": f"file {foreign_file['id']} is not attached to this instance"}]
    assert client.get(f"/tasks/{submit}", headers=learner).json()["status"] == "open"


def test_the_completed_task_and_the_pass_event_carry_the_evidence(client, app, mounted):
    learner, assessor = auth(mounted, *LEARNER), auth(mounted, *ASSESSOR)
    instance_id = start(client, mounted)
    photo = upload(client, mounted, instance_id, b"\xff\xd8\xff a weld", name="weld.jpg").json()
    report = upload(client, mounted, instance_id, b"%PDF-1.7 report", "application/pdf", "report.pdf").json()
    upload(client, mounted, instance_id, b"not used", "text/plain", "notes.txt")

    submit = only_open_task(client, learner, instance_id)
    done = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": STATEMENT, "evidence_files": [photo["id"], report["id"]]}})
    assert done.status_code == 200, done.text
    task = app.get_task(UUID(submit))
    assert [(f["id"], f["sha256"]) for f in task.evidence] == [
        (photo["id"], hashlib.sha256(b"\xff\xd8\xff a weld").hexdigest()),
        (report["id"], hashlib.sha256(b"%PDF-1.7 report").hexdigest())]

    assess = only_open_task(client, learner, instance_id)
    # The assessor reads the evidence before assessing: exactly the bytes submitted.
    assert client.get(f"/instances/{instance_id}/files/{photo['id']}", headers=assessor).content == b"\xff\xd8\xff a weld"
    assert client.post(f"/tasks/{assess}/claim", headers=assessor).status_code == 200
    assert client.post(f"/tasks/{assess}/complete", headers=assessor, json={"data": {
        "score": 90, "feedback": "Even bead."}}).status_code == 200
    instance = client.get(f"/instances/{instance_id}", headers=learner).json()
    if instance["status"] == "running":  # the observation, a manual task
        observe = only_open_task(client, learner, instance_id)
        assert client.post(f"/tasks/{observe}/claim", headers=assessor).status_code == 200
        assert client.post(f"/tasks/{observe}/complete", headers=assessor, json={"data": {}}).status_code == 200
    aggregate = app.get_instance(UUID(instance_id))
    assert (aggregate.status, aggregate.result) == ("completed", "pass")

    (completed,) = [e for e in app.events.get(UUID(instance_id)) if type(e).__name__ == "Completed"]
    cloudevent = to_cloudevent(completed, aggregate)
    evidence = cloudevent.data["achievement"]["evidence"]
    assert [(e["id"], e["name"], e["media_type"], e["sha256"]) for e in evidence] == [
        (f"urn:skillbase:file:{photo['id']}", "weld.jpg", "image/jpeg", photo["sha256"]),
        (f"urn:skillbase:file:{report['id']}", "report.pdf", "application/pdf", report["sha256"])]


def test_an_upload_retried_with_its_idempotency_key_stores_one_file(client, app, mounted):
    instance_id = start(client, mounted)
    before = on_disk(mounted)  # the mount is shared by the session's tests
    photo = b"\xff\xd8\xff the same photo"
    first = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "upload-1"})
    again = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "upload-1"})
    other = upload(client, mounted, instance_id, b"\xff\xd8\xff another photo", **{"Idempotency-Key": "upload-1"})

    assert first.status_code == 201, first.text
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 422 and other.json()["errors"][0]["path"] == "header:Idempotency-Key"
    attached = [e for e in app.events.get(UUID(instance_id)) if type(e).__name__ == "FileAttached"]
    assert len(attached) == 1
    assert on_disk(mounted) - before == {f"{first.json()['id']}.jpg"}


def test_a_retry_of_an_upload_that_filled_or_outlived_the_instance_gets_its_answer_again(client, app, mounted,
                                                                                          monkeypatch):
    """The checks for a new file (room left, instance running) do not apply to a retry of one
    that was stored: its client may only have lost the first answer."""
    monkeypatch.setattr(app, "files_max_per_instance", 1)
    learner = auth(mounted, *LEARNER)
    instance_id = start(client, mounted)
    photo = b"\xff\xd8\xff the last photo there is room for"
    first = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "fills-it"})
    full = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "fills-it"})
    assert client.post(f"/instances/{instance_id}/cancel", headers=learner,
                       json={"reason": "changed my mind"}).status_code == 200
    ended = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "fills-it"})
    stranger = upload(client, mounted, instance_id, photo, who=OTHER_LEARNER, **{"Idempotency-Key": "fills-it"})

    assert first.status_code == 201, first.text
    for again in (full, ended):
        assert again.status_code == 201, again.text
        assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert stranger.status_code == 404
    assert upload(client, mounted, instance_id, b"new", **{"Idempotency-Key": "another"}).status_code == 409


def test_a_keyed_upload_whose_first_attempt_died_before_attaching_attaches_the_file_it_left(
    client, app, mounted
):
    """The first attempt wrote the key's file and died before recording it (and another left
    a partial): the retry with the same bytes attaches that file; other bytes are a 422."""
    from application.bootstrap import open_file_store
    from domain.ids import command_id

    instance_id = start(client, mounted)
    store = open_file_store(mounted)
    photo = b"\xff\xd8\xff written, never attached"
    file_id = command_id(f"upload/{LEARNER[0]}/{instance_id}", "died-once")
    store.write([photo], "image/jpeg", file_id)
    (store.directory / f".{file_id}.jpg.partial").write_bytes(b"\xff\xd8")  # a writer killed earlier still

    other = upload(client, mounted, instance_id, b"\xff\xd8\xff other bytes", **{"Idempotency-Key": "died-once"})
    retried = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "died-once"})
    again = upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "died-once"})

    assert other.status_code == 422 and other.json()["errors"][0]["path"] == "header:Idempotency-Key"
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == str(file_id) and retried.json()["sha256"] == hashlib.sha256(photo).hexdigest()
    assert again.status_code == 201 and again.json() == retried.json()
    assert list(app.get_instance(UUID(instance_id)).files) == [str(file_id)]
    with store.open(file_id, "jpg") as opened:
        assert opened.read() == photo


def test_a_stale_partial_of_the_key_does_not_block_its_retry(client, app, mounted):
    from application.bootstrap import open_file_store
    from domain.ids import command_id

    instance_id = start(client, mounted)
    store = open_file_store(mounted)
    file_id = command_id(f"upload/{LEARNER[0]}/{instance_id}", "killed-mid-write")
    store.directory.mkdir(parents=True, exist_ok=True)
    # what a writer killed mid-write leaves: one partial of its own (and, under the naming
    # before each write had its own, the one every retry of the key then collided with)
    (store.directory / f".{file_id}.jpg.0123456789ab.partial").write_bytes(b"\xff\xd8")
    (store.directory / f".{file_id}.jpg.partial").write_bytes(b"\xff\xd8")

    retried = upload(client, mounted, instance_id, b"\xff\xd8\xff whole", **{"Idempotency-Key": "killed-mid-write"})

    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == str(file_id)


def test_odd_headers_get_their_answer_not_a_500(client, mounted):
    instance_id = start(client, mounted)
    odd_charset = upload(client, mounted, instance_id, b"\xff\xd8\xff photo",
                         **{"Content-Disposition": "attachment; filename*=nope''a%41.jpg"})
    codec_charset = upload(client, mounted, instance_id, b"\xff\xd8\xff photo",
                           **{"Content-Disposition": "attachment; filename*=base64''aGk%3D.jpg"})
    assert odd_charset.status_code == 201 and odd_charset.json()["name"] == "aA.jpg"
    assert codec_charset.status_code == 201 and codec_charset.json()["name"] == "aGk=.jpg"

    location = odd_charset.headers["location"]
    learner = auth(mounted, *LEARNER)
    long_end = client.get(location, headers={**learner, "Range": "bytes=0-" + "9" * 5000})
    long_suffix = client.get(location, headers={**learner, "Range": "bytes=-" + "9" * 5000})
    long_start = client.get(location, headers={**learner, "Range": "bytes=" + "9" * 5000 + "-"})
    assert long_end.status_code == 206 and long_end.content == b"\xff\xd8\xff photo"
    assert long_suffix.status_code == 206 and long_suffix.content == b"\xff\xd8\xff photo"
    assert long_start.status_code == 416


def test_an_attach_that_saved_but_lost_its_answer_keeps_the_file_an_attach_refused_removes_it(
    client, app, mounted, monkeypatch
):
    """The commit went through and its answer was lost with the connection: the file is on
    record, so it must stay on disk; an attach that really failed takes its bytes away."""
    from eventsourcing.persistence import OperationalError

    instance_id = start(client, mounted)
    real_attach = app.attach_file

    def saved_then_lost(*args, **kwargs):
        real_attach(*args, **kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(app, "attach_file", saved_then_lost)
    lost = upload(client, mounted, instance_id, b"\xff\xd8\xff saved, answer lost")
    assert lost.status_code == 503, lost.text
    (file_id,) = app.get_instance(UUID(instance_id)).files
    assert f"{file_id}.jpg" in on_disk(mounted)
    got = client.get(f"/instances/{instance_id}/files/{file_id}", headers=auth(mounted, *LEARNER))
    assert got.status_code == 200 and got.content == b"\xff\xd8\xff saved, answer lost"

    def refused(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(app, "attach_file", refused)
    before = on_disk(mounted)
    assert upload(client, mounted, instance_id, b"\xff\xd8\xff never saved").status_code == 503
    assert on_disk(mounted) == before


def test_a_form_may_name_a_file_id_in_capitals(client, app, mounted):
    learner = auth(mounted, *LEARNER)
    instance_id = start(client, mounted)
    photo = upload(client, mounted, instance_id, b"\xff\xd8\xff capitals").json()
    submit = only_open_task(client, learner, instance_id)
    done = client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": STATEMENT, "evidence_files": [photo["id"].upper()]}})
    assert done.status_code == 200, done.text
    assert [f["id"] for f in app.get_task(UUID(submit)).evidence] == [photo["id"]]


def test_parallel_uploads_to_one_instance_all_attach(client, app, mounted):
    """Several photos sent at once: each attach appends to the same instance, and all but the
    first met a concurrent save and got 409, their stored bytes thrown away."""
    import threading

    instance_id = start(client, mounted)
    barrier, answers = threading.Barrier(6), []

    def send(n: int) -> None:
        barrier.wait()
        answers.append(upload(client, mounted, instance_id, b"photo %d\n" % n, "text/plain", f"photo-{n}.txt"))

    senders = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert sorted(answer.status_code for answer in answers) == [201] * 6, [a.text for a in answers]
    assert len(app.get_instance(UUID(instance_id)).files) == 6


def test_whoever_an_admin_reassigns_the_assessment_to_may_read_its_evidence(client, mounted):
    """A stand-in assessor outside the lane's group sees the task and alone may complete it:
    the evidence answered them 404."""
    instance_id = start(client, mounted)
    learner, admin, stand_in = auth(mounted, *LEARNER), auth(mounted, *ADMIN), auth(mounted, *OUTSIDER)
    location = upload(client, mounted, instance_id, b"%PDF-1.7 mine", "application/pdf", "mine.pdf").headers["location"]
    submit = client.get(f"/instances/{instance_id}", headers=learner).json()["open_tasks"][0]["id"]
    assert client.post(f"/tasks/{submit}/complete", headers=learner, json={"data": {
        "statement": "A fillet weld on 6 mm mild steel.", "evidence_files": [location.rsplit("/", 1)[1]]}}).status_code == 200
    assess = client.get(f"/instances/{instance_id}", headers=learner).json()["open_tasks"][0]["id"]
    assert client.get(location, headers=stand_in).status_code == 404  # not theirs yet

    assert client.post(f"/tasks/{assess}/reassign", headers=admin, json={"assignee": OUTSIDER[0]}).status_code == 200

    assert client.get(f"/tasks/{assess}", headers=stand_in).status_code == 200
    assert client.get(location, headers=stand_in).content == b"%PDF-1.7 mine"
    assert client.get(f"/instances/{instance_id}/files", headers=stand_in).status_code == 200
    assert client.get(location, headers=auth(mounted, *OTHER_LEARNER)).status_code == 404


def test_housekeeping_never_removes_the_old_file_a_keyed_retry_is_adopting(client, app, mounted):
    """The first attempt left its file days ago; the retry adopts it while housekeeping runs,
    after housekeeping read the log: it used to delete the file just attached (a 404 for the
    evidence, MISSING for ever)."""
    import time
    from datetime import timedelta

    from application.bootstrap import open_file_store
    from application.files.housekeeping import housekeeping
    from domain.ids import command_id

    instance_id = start(client, mounted)
    store = open_file_store(mounted)
    photo = b"\xff\xd8\xff written three days ago, never attached"
    file_id = command_id(f"upload/{LEARNER[0]}/{instance_id}", "days-later")
    store.write([photo], "image/jpeg", file_id)
    three_days_ago = time.time() - 3 * 86400
    os.utime(store.path_for(file_id, "jpg"), (three_days_ago, three_days_ago))
    retried = []

    def references_then_the_retry() -> list[Any]:
        found = list(app.file_references())  # the log as housekeeping read it: no such file yet
        retried.append(upload(client, mounted, instance_id, photo, **{"Idempotency-Key": "days-later"}))
        return found

    report = housekeeping(store, references_then_the_retry, grace=timedelta(hours=24), lock=app.file_lock)

    assert retried[0].status_code == 201, retried[0].text
    assert file_id not in [f.file_id for f in report.removed]  # the volume holds other tests' files too
    assert file_id in [f.file_id for f in report.kept]
    location = retried[0].headers["location"]
    assert client.get(location, headers=auth(mounted, *LEARNER)).content == photo
    assert str(file_id) not in [missing for missing, _ext, _instance in
                                housekeeping(store, app.file_references, grace=timedelta(hours=24)).missing]


def test_head_gives_a_download_s_headers_without_its_bytes(client, mounted):
    """Download managers and players ask HEAD before ranged reads: it was a 405."""
    instance_id = start(client, mounted)
    data = b"%PDF-1.7 " + b"x" * 1000
    location = upload(client, mounted, instance_id, data, "application/pdf", "mine.pdf").headers["location"]
    got = client.get(location, headers=auth(mounted, *LEARNER))
    headed = client.head(location, headers=auth(mounted, *LEARNER))
    assert headed.status_code == 200 and headed.content == b""
    for name in ("content-type", "etag", "accept-ranges", "content-disposition", "x-content-type-options"):
        assert headed.headers[name] == got.headers[name], name
    assert headed.headers["content-length"] == str(len(data))
    cached = client.head(location, headers={**auth(mounted, *LEARNER), "If-None-Match": got.headers["etag"]})
    assert cached.status_code == 304
    assert client.head(location, headers=auth(mounted, *OTHER_LEARNER)).status_code == 404
    assert client.head(location).status_code == 401
