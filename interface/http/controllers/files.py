"""``/instances/{id}/files``: upload, list and download an instance's evidence files.

Upload is a raw body — ``Content-Type`` is the file's media type, the client's file name comes
in ``Content-Disposition: attachment; filename*=UTF-8''...`` (or ``filename="..."``, or a
percent-encoded ``X-File-Name``) — so the bytes stream straight to the store, a megabyte at
a time, and are never held whole in memory. Who may upload, the media type and the announced
``Content-Length`` are all checked before a byte is read; the size limit again while
streaming. The file name is metadata only: the path on disk is the file's UUID and the
extension of its media type.

Download streams the bytes with ``ETag`` = sha256, ``Accept-Ranges: bytes`` and one
``Range`` (206/416). Whoever may not read a file gets 404, never 403: a learner never learns
that another learner's instance exists.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import quote, unquote
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, head, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.response import Stream

from application.bootstrap import open_file_store
from application.files.media_types import extension_for
from application.files.store import PosixFileStore, StoredFile
from domain.errors import Conflict, InvalidInput, NotFound, Problem, Unsupported
from domain.identity import Actor
from domain.ids import command_id, scope_part
from interface.http import schemas, views
from interface.http.commands import KEY_PATTERN
from interface.http.commands import IDEMPOTENCY_KEY
from interface.http.openapi import errors
from interface.http.problems import PROBLEM_JSON, ProblemDetails
from interface.http.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range
from interface.http.services import Services

log = logging.getLogger("skillbase.workflow.http.files")

CHUNK = 1024 * 1024
_FILENAME_STAR = re.compile(r"""filename\*\s*=\s*([\w!#$&+.^`|~-]+)'[\w-]*'([^;\s]+)""", re.IGNORECASE)
_FILENAME = re.compile(r"""filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))""", re.IGNORECASE)
_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 8187 attr-char, besides letters and digits
_FILENAME_CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "iso-8859-1": "iso-8859-1", "latin1": "iso-8859-1",
                      "latin-1": "iso-8859-1", "us-ascii": "ascii", "ascii": "ascii"}


class FileList(msgspec.Struct):
    """The instance's files, in the order they were attached."""

    items: list[schemas.FileRef]


_RANGE_416 = ResponseSpec(
    data_container=ProblemDetails, media_type=PROBLEM_JSON, generate_examples=False,
    description="Range not satisfiable: the range starts past the end (see Content-Range: bytes */size)",
)


class FileController(Controller):
    path = "/instances/{instance_id:uuid}/files"
    tags = ["instances"]

    @post(
        "/", status_code=201, summary="Upload a file to an instance",
        request_max_body_size=None,  # the store's own limit applies, before and while streaming
        # any media type reaches the handler, which answers 415 from the store's allow-list
        # after checking permission (the app's JSON-only body check stands aside)
        opt={"raw_body": True},
        responses=errors(400, 404, 409, 413, 415, 422),
    )
    async def upload(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID]
    ) -> Response[schemas.FileRef]:
        """The body is the file itself, sent as its media type (`Content-Type: image/jpeg`, one of
        the allowed types, else 415), with its name in `Content-Disposition: attachment;
        filename*=UTF-8''weld%20photo.jpg` (or `X-File-Name`, percent-encoded). Only the learner
        and admins may upload, while the instance runs. Over the size limit: 413, by
        `Content-Length` before reading, or as soon as the stream passes the limit. Answers the
        file record with its sha256; the upload is an instance event (`FileAttached`)."""
        actor, service, store = request.user, services.service, file_store(request, services)
        file_id: UUID | None = None
        if request.headers.get(IDEMPOTENCY_KEY) is not None:
            # A retry of an upload that succeeded gets its answer again, even once the
            # instance is full or has ended: the checks below are for new files.
            file_id, earlier = await services.run(_keyed, service, request, actor, instance_id)
            if earlier is not None:
                return await _replay(request, store, earlier)
        await services.run(service.check_can_upload, actor, instance_id)
        media_type = store.check(_content_type(request), request.content_length)
        if request.content_length == 0:
            raise InvalidInput("the file is empty", [Problem("$", "send the file's bytes as the body")])
        name = upload_name(request)
        if file_id is not None and await anyio.to_thread.run_sync(store.exists, file_id, extension_for(media_type)):
            return await _adopt(request, services, store, file_id, media_type, name)
        try:
            stored = await store.write_async(request.stream(), media_type, file_id)
        except Conflict:
            raise Conflict("an upload with this Idempotency-Key is being saved at this moment: retry shortly") from None
        try:
            if stored.size == 0:
                raise InvalidInput("the file is empty", [Problem("$", "send the file's bytes as the body")])
            file = await services.run(
                service.attach_file, actor, instance_id, file_id=stored.file_id, extension=stored.extension,
                media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name=name,
            )
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled request still tidies up
                await anyio.to_thread.run_sync(_remove_unattached, service, store, instance_id, stored)
            raise
        return _created(instance_id, file)

    @get("/", summary="An instance's files", responses=errors(404))
    async def list_files(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID]
    ) -> FileList:
        """The files attached to the instance: to its learner, members of the groups that work
        its tasks, and admins; 404 for anyone else."""
        files = await services.run(services.service.readable_files, request.user, instance_id)
        return FileList(items=[views.file_ref(f) for f in files])

    @get("/{file_id:uuid}", summary="Download a file", responses={**errors(404), 416: _RANGE_416})
    async def download(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID],
        file_id: FromPath[UUID],
    ) -> Response[Any]:
        """The file's bytes, as its media type, with `Content-Disposition: attachment` and its
        name, `ETag` (its sha256; `If-None-Match` gives 304) and one `Range` (206, or 416 when
        the range starts past the end; `If-Range` with the ETag). To the same people as the
        list; 404 for anyone else."""
        file, etag, opened = await _download(request, services, instance_id, file_id)
        if opened is None:
            return Response(b"", status_code=304, headers={"ETag": etag})
        size = os.fstat(opened.fileno()).st_size
        headers = _download_headers(file, etag)
        wanted: ByteRange | None = None
        try:
            if if_range_allows(request.headers.get("if-range"), etag):
                wanted = parse_range(request.headers.get("range"), size)
        except Unsatisfiable:
            opened.close()
            return _unsatisfiable(request, size, headers)
        start, length = (wanted.start, wanted.length) if wanted else (0, size)
        headers["Content-Length"] = str(length)
        if wanted:
            headers["Content-Range"] = wanted.content_range(size)
        return Stream(_chunks(opened, start, length), status_code=206 if wanted else 200,
                      media_type=file["media_type"], headers=headers)

    @head("/{file_id:uuid}", summary="A file's headers", responses=errors(404))
    async def download_headers(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], instance_id: FromPath[UUID],
        file_id: FromPath[UUID],
    ) -> Response[None]:
        """What a download answers, without the bytes (RFC 9110 §9.3.2): its media type,
        `Content-Length`, `ETag` and `Accept-Ranges`, so a client can plan ranged reads.
        To the same people as the download; 404 for anyone else."""
        file, etag, opened = await _download(request, services, instance_id, file_id)
        if opened is None:
            return Response(b"", status_code=304, headers={"ETag": etag})
        try:
            size = os.fstat(opened.fileno()).st_size
        finally:
            opened.close()
        return Response(b"", status_code=200, media_type=file["media_type"],
                        headers={**_download_headers(file, etag), "Content-Length": str(size)})


async def _download(
    request: Request[Actor, Any, Any], services: Services, instance_id: UUID, file_id: UUID
) -> tuple[dict[str, Any], str, BinaryIO | None]:
    """The file's record (404 unless the user may read it), its ETag, and the file opened;
    None instead of the file when ``If-None-Match`` names that ETag (a 304)."""
    store = file_store(request, services)
    file = await services.run(services.service.readable_file, request.user, instance_id, str(file_id))
    etag = f'"{file["sha256"]}"'
    if {etag, "*"} & _tags(request.headers.get("if-none-match")):
        return file, etag, None
    return file, etag, await anyio.to_thread.run_sync(_open, store, file)


def _download_headers(file: dict[str, Any], etag: str) -> dict[str, str]:
    return {
        "ETag": etag, "Accept-Ranges": "bytes", "Content-Disposition": content_disposition(file["name"]),
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache",
    }


def file_store(request: Request, services: Services) -> PosixFileStore:
    """The app's file store, built once from the settings (nothing is opened: a missing mount
    is found, and answered with 503, by the first call that touches the disk)."""
    state = request.app.state
    store = state.get("file_store")
    if store is None:
        store = state["file_store"] = open_file_store(services.settings)
    return store


def upload_name(request: Request) -> str:
    """The client's name for the file: ``Content-Disposition`` ``filename*`` (RFC 8187),
    then ``filename``, then ``X-File-Name`` (percent-encoded UTF-8). Metadata only."""
    disposition = request.headers.get("content-disposition", "")
    found = _FILENAME_STAR.search(disposition)
    if found:
        # RFC 8187 asks for UTF-8 and ISO-8859-1 only; any other charset (an unknown one, or
        # a codec like base64 that is not a text encoding) is read as UTF-8.
        charset = _FILENAME_CHARSETS.get(found.group(1).lower(), "utf-8")
        return unquote(found.group(2), encoding=charset, errors="replace")
    found = _FILENAME.search(disposition)
    if found:
        return re.sub(r"\\(.)", r"\1", found.group(1)) if found.group(1) is not None else found.group(2)
    return unquote(request.headers.get("x-file-name", ""), errors="replace")


def content_disposition(name: str) -> str:
    """``attachment`` with the name's last path part: an ASCII ``filename`` fallback and the
    exact name as ``filename*`` (RFC 6266, RFC 8187)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    if base in (".", ".."):
        base = "file"
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in base)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe=_ATTR_CHARS)}"


def _content_type(request: Request) -> str:
    media_type = request.headers.get("content-type", "")
    if not media_type.strip():
        raise Unsupported("send the file with its media type as Content-Type")
    return media_type


def _open(store: PosixFileStore, file: dict[str, Any]) -> BinaryIO:
    try:
        return store.open(file["id"], file["extension"])
    except NotFound:
        # On record but not on disk: housekeeping reports these.
        log.error("file on record is missing from the store", extra={"file_id": file["id"]})
        raise


async def _chunks(opened: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
    try:
        if start:
            await anyio.to_thread.run_sync(opened.seek, start)
        left = length
        while left > 0:
            chunk = await anyio.to_thread.run_sync(opened.read, min(CHUNK, left))
            if not chunk:
                break  # the file shrank under us; the client sees a short body
            left -= len(chunk)
            yield chunk
    finally:
        opened.close()


def _unsatisfiable(request: Request, size: int, headers: dict[str, str]) -> Response[ProblemDetails]:
    body = ProblemDetails(type="/problems/range-not-satisfiable", title="Range not satisfiable", status=416,
                          detail=f"the file has {size} bytes", instance=request.url.path)
    keep = {k: headers[k] for k in ("ETag", "Accept-Ranges")}
    return Response(body, status_code=416, media_type=PROBLEM_JSON,
                    headers={**keep, "Content-Range": f"bytes */{size}"})


def _tags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _keyed(
    service: Any, request: Request, actor: Actor, instance_id: UUID
) -> tuple[UUID, dict[str, Any] | None]:
    """With an ``Idempotency-Key``, the file's id follows from it (a retried upload cannot
    store a second file, and a concurrent twin collides on the id): that id, and its record
    if it is attached already. Whoever may not see the instance gets 404 first."""
    instance = service.visible_instance(actor, instance_id)
    key = request.headers.get(IDEMPOTENCY_KEY, "")
    if not KEY_PATTERN.match(key):
        raise InvalidInput(
            "the Idempotency-Key header is not valid",
            [Problem("header:Idempotency-Key", "1 to 255 printable ASCII characters, no spaces")],
        )
    file_id = command_id(f"upload/{scope_part(actor.user_id)}/{instance_id}", key)
    return file_id, instance.files.get(str(file_id))


def _attached(service: Any, actor: Actor, instance_id: UUID, file_id: UUID) -> dict[str, Any] | None:
    return service.visible_instance(actor, instance_id).files.get(str(file_id))


async def _replay(request: Request, store: PosixFileStore, earlier: dict[str, Any]) -> Response[Any]:
    """The same key again: the same bytes get the stored answer, other bytes a 422."""
    if await _digest(request, store.max_bytes) != (earlier["size"], earlier["sha256"]):
        raise _key_reused()
    return _created(request.path_params["instance_id"], earlier, replayed=True)


async def _adopt(
    request: Request[Actor, Any, Any], services: Services, store: PosixFileStore, file_id: UUID,
    media_type: str, name: str,
) -> Response[Any]:
    """The key's file is on disk but on no record: an earlier attempt with this key wrote it
    and did not live to attach it, or a twin sent at the same moment is attaching it now.
    The same bytes attach that very file (or get the twin's answer); other bytes are a 422.
    Never removes the file: it may be the twin's."""
    instance_id = request.path_params["instance_id"]
    extension = extension_for(media_type)
    sent = await _digest(request, store.max_bytes)
    try:
        held = await anyio.to_thread.run_sync(_digest_file, store, file_id, extension)
    except NotFound:  # removed meanwhile (housekeeping): nothing to adopt any more
        raise Conflict("an upload with this Idempotency-Key is being saved at this moment: retry shortly") from None
    if sent != held:
        raise _key_reused()
    def adopt() -> dict[str, Any]:
        # Under the file's lock, made young first: housekeeping deletes an orphan only under
        # that lock and only while it is still old, so it cannot remove the file being attached.
        with services.service.file_lock(file_id):
            if not store.touch(file_id, extension):
                raise Conflict("an upload with this Idempotency-Key is being saved at this moment: retry shortly")
            return services.service.attach_file(request.user, instance_id, file_id=file_id, extension=extension,
                                                media_type=media_type, size=sent[0], sha256=sent[1], name=name)

    try:
        file = await services.run(adopt)
    except Conflict:
        earlier = await services.run(_attached, services.service, request.user, instance_id, file_id)
        if earlier is None:
            raise
        return _created(instance_id, earlier, replayed=True)
    return _created(instance_id, file)


async def _digest(request: Request, limit: int) -> tuple[int, str]:
    """The body's size and sha256, read to its end or just past ``limit``."""
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            break
        digest.update(chunk)
    return size, digest.hexdigest()


def _digest_file(store: PosixFileStore, file_id: UUID, extension: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with store.open(file_id, extension) as opened:
        while chunk := opened.read(CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def _key_reused() -> InvalidInput:
    return InvalidInput(
        "this Idempotency-Key was already used with a different file",
        [Problem("header:Idempotency-Key", "use a new key for a new upload")],
    )


def _created(instance_id: Any, file: dict[str, Any], *, replayed: bool = False) -> Response[schemas.FileRef]:
    headers = {"Location": f"/instances/{instance_id}/files/{file['id']}", "ETag": f'"{file["sha256"]}"'}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(views.file_ref(file), status_code=201, headers=headers)


def _remove_unattached(service: Any, store: PosixFileStore, instance_id: UUID, stored: StoredFile) -> None:
    """After a failed attach, removes the bytes unless the log shows them attached after all:
    a save whose answer was lost with its connection, or a request cancelled once its save
    was done, must not cost a file that is on record. When the log cannot be read, the file
    stays; housekeeping removes it after its grace period if no event refers to it."""
    try:
        attached = str(stored.file_id) in service.get_instance(instance_id).files
    except NotFound:
        attached = False
    except Exception:
        log.warning("an upload's attach failed and the log cannot say whether it was saved: the file stays",
                    extra={"file_id": str(stored.file_id)}, exc_info=True)
        return
    if not attached:
        _delete_quietly(store, stored.file_id, stored.extension)


def _delete_quietly(store: PosixFileStore, file_id: UUID, extension: str) -> None:
    try:
        store.delete(file_id, extension)
    except Exception:  # the mount may be the reason we are here; housekeeping retries
        log.warning("could not remove an unattached upload", extra={"file_id": str(file_id)}, exc_info=True)
