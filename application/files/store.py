"""The file store: evidence files under ``<root>/skillbase/workflow/<file-uuid>.<extension>``.

A write streams into a hidden ``.<file-uuid>.<extension>.<random>.partial`` in the same directory,
counting bytes and hashing as it goes, is fsynced, given its final name (one rename that
refuses a taken name, ``renameat2(RENAME_NOREPLACE)``; a hard link then an unlink where that is
missing; a plain rename where links are too, which alone could let two racing writers of
one id replace each other) and the
directory fsynced: a reader sees the whole file or nothing. A crash leaves only the hidden partial, which
``list_files`` never shows and ``sweep_partials`` removes. Paths are built only from a UUID and
an extension from the fixed table, never from anything a client named.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol
from uuid import UUID, uuid4

from domain.errors import Conflict, InvalidInput, NotFound, TooLarge, Unavailable, Unsupported

from .media_types import extension_for, is_stored_extension, normalize

SUBDIRECTORY = ("skillbase", "workflow")
PARTIAL_SUFFIX = ".partial"
FILE_MODE = 0o640
# write_async hands the disk thread this much at a time: few thread hops, bounded memory.
ASYNC_BATCH = 1024 * 1024
# ... with at most this many batches received and waiting for the disk.
ASYNC_DEPTH = 2
# Chunks at least this large are hashed in another thread while they are written
# (hashlib and os.write both release the GIL): a write costs max(hash, write), not the sum.
OVERLAP_MIN = 256 * 1024
_HASHERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="file-sha256")


@dataclass(frozen=True)
class StoredFile:
    file_id: UUID
    extension: str
    media_type: str
    size: int
    sha256: str  # lower-case hex
    path: Path


class ListedFile(NamedTuple):
    file_id: UUID
    extension: str
    size: int
    mtime: datetime  # UTC


class FileStore(Protocol):
    def write(
        self, chunks: Iterable[bytes], media_type: str, file_id: UUID | None = None
    ) -> StoredFile: ...

    async def write_async(
        self, chunks: AsyncIterable[bytes], media_type: str, file_id: UUID | None = None
    ) -> StoredFile: ...

    def open(self, file_id: UUID | str, extension: str) -> BinaryIO: ...

    def path_for(self, file_id: UUID | str, extension: str) -> Path: ...

    def exists(self, file_id: UUID | str, extension: str) -> bool: ...

    def delete(self, file_id: UUID | str, extension: str) -> bool: ...

    def touch(self, file_id: UUID | str, extension: str) -> bool: ...

    def modified_at(self, file_id: UUID | str, extension: str) -> datetime | None: ...

    def list_files(self) -> Iterator[ListedFile]: ...

    def sweep_partials(self, older_than: timedelta) -> list[Path]: ...

    def partials(self, older_than: timedelta) -> list[Path]: ...

    def check(self, media_type: str, size: int | None = None) -> str: ...


class PosixFileStore:
    """A ``FileStore`` on any POSIX directory: a local one, or a JuiceFS mount in production.

    With ``require_mount`` the root must be a mount point, so an unmounted JuiceFS directory
    is reported as ``Unavailable`` instead of silently filling the local disk.
    """

    def __init__(
        self,
        root: Path | str,
        max_bytes: int,
        allowed_types: tuple[str, ...],
        *,
        require_mount: bool = False,
    ) -> None:
        unknown = [t for t in allowed_types if not _known_type(t)]
        if unknown:
            raise ValueError(f"allowed file types not in the media type table: {unknown}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.directory = self.root.joinpath(*SUBDIRECTORY)
        self.max_bytes = max_bytes
        self.allowed_types = tuple(normalize(t) for t in allowed_types)
        self.require_mount = require_mount

    # --- writing ---------------------------------------------------------------------------

    def write(
        self, chunks: Iterable[bytes], media_type: str, file_id: UUID | None = None
    ) -> StoredFile:
        partial = self._begin(media_type, file_id)
        try:
            for chunk in chunks:
                partial.write(chunk)
            return partial.commit()
        finally:
            partial.abort()

    async def write_async(
        self, chunks: AsyncIterable[bytes], media_type: str, file_id: UUID | None = None
    ) -> StoredFile:
        """Receives and writes at the same time: a writer task takes batches of
        ``ASYNC_BATCH`` bytes to a disk thread while the next batches arrive, with at most
        ``ASYNC_DEPTH`` batches waiting, so memory stays bounded whatever the file size."""
        partial = await asyncio.to_thread(self._begin, media_type, file_id)
        batches: asyncio.Queue[bytearray | None] = asyncio.Queue(maxsize=ASYNC_DEPTH)

        async def drain() -> None:
            while (full := await batches.get()) is not None:
                await asyncio.to_thread(partial.write, full)

        writer = asyncio.create_task(drain())

        async def hand_over(item: bytearray | None) -> None:
            put = asyncio.ensure_future(batches.put(item))
            await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():  # before the end, only by failing: raise its error
                put.cancel()
                writer.result()

        try:
            batch, received = bytearray(), 0
            async for chunk in chunks:
                received += len(chunk)
                if received > self.max_bytes:
                    raise self._too_large()
                batch += chunk
                if len(batch) >= ASYNC_BATCH:
                    full, batch = batch, bytearray()
                    await hand_over(full)
            await hand_over(batch)
            await hand_over(None)
            await writer
            return await asyncio.to_thread(partial.commit)
        finally:
            if not writer.done():
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            # Waits for a write still running in its thread; survives a second cancellation.
            await asyncio.shield(asyncio.to_thread(partial.abort))

    def check(self, media_type: str, size: int | None = None) -> str:
        """The normalized media type, if a file of that type (and announced ``size``) would
        be accepted: ``Unsupported`` outside the allow-list, ``TooLarge`` over the limit.
        Lets an upload be refused before a byte of it is read."""
        media_type = normalize(media_type)
        if media_type not in self.allowed_types:
            raise Unsupported(
                f"files of type {media_type!r} are not accepted; "
                f"allowed: {', '.join(self.allowed_types)}"
            )
        if size is not None and size > self.max_bytes:
            raise self._too_large()
        return media_type

    def _begin(self, media_type: str, file_id: UUID | None) -> _PartialFile:
        media_type = self.check(media_type)
        extension = extension_for(media_type)
        file_id = uuid4() if file_id is None else _file_id(file_id)
        directory = self._ready_directory(create=True)
        final = directory / f"{file_id}.{extension}"
        if _exists(final):
            raise Conflict(f"file {file_id}.{extension} already exists")
        # Each write has a partial of its own: one that a crashed writer left behind never
        # stands in the way of a retry under the same id; two live writers of one id race
        # only for the final name, which exactly one of them gets.
        temp = directory / f".{file_id}.{extension}.{uuid4().hex[:12]}{PARTIAL_SUFFIX}"
        with _unavailable_on_os_error("start writing", temp):
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        return _PartialFile(
            fd, temp, final, StoredFile(file_id, extension, media_type, 0, "", final), self
        )

    def _too_large(self) -> TooLarge:
        return TooLarge(f"file is larger than the limit of {self.max_bytes} bytes")

    # --- reading ---------------------------------------------------------------------------

    def path_for(self, file_id: UUID | str, extension: str) -> Path:
        """The final path of a file; ``InvalidInput`` unless a UUID and a known extension."""
        if not isinstance(extension, str) or not is_stored_extension(extension):
            raise InvalidInput(f"not a stored file extension: {extension!r}")
        return self.directory / f"{_file_id(file_id)}.{extension}"

    def open(self, file_id: UUID | str, extension: str) -> BinaryIO:
        path = self.path_for(file_id, extension)
        self._ready_directory()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            return os.fdopen(fd, "rb")
        except FileNotFoundError:
            raise NotFound(f"file {path.name} not found") from None
        except OSError as error:
            raise Unavailable(f"file store cannot read {path.name}: {error}") from error

    def exists(self, file_id: UUID | str, extension: str) -> bool:
        path = self.path_for(file_id, extension)
        self._ready_directory()
        with _unavailable_on_os_error("look up", path):
            return _exists(path)

    def delete(self, file_id: UUID | str, extension: str) -> bool:
        """Removes the file; False if it was not there."""
        path = self.path_for(file_id, extension)
        directory = self._ready_directory()
        with _unavailable_on_os_error("delete", path):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            _fsync_directory(directory)
        return True

    def touch(self, file_id: UUID | str, extension: str) -> bool:
        """Makes the file young again (its mtime now); False if it is not there. An upload's
        retry adopting the file an earlier attempt left does this before attaching it, so
        housekeeping, which re-reads the age under the same lock, leaves it alone."""
        path = self.path_for(file_id, extension)
        self._ready_directory()
        with _unavailable_on_os_error("touch", path):
            try:
                os.utime(path, follow_symlinks=False)
            except FileNotFoundError:
                return False
        return True

    def modified_at(self, file_id: UUID | str, extension: str) -> datetime | None:
        """When the file was last written (or touched); None if it is not there."""
        path = self.path_for(file_id, extension)
        self._ready_directory()
        with _unavailable_on_os_error("look up", path):
            try:
                return datetime.fromtimestamp(os.stat(path, follow_symlinks=False).st_mtime, UTC)
            except FileNotFoundError:
                return None

    def list_files(self) -> Iterator[ListedFile]:
        """Every complete file; partials, strays and foreign names are left out."""
        directory = self._ready_directory()
        with _unavailable_on_os_error("list", directory):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                return
        for entry in entries:
            parsed = _parse_name(entry.name)
            if parsed is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while we listed
            yield ListedFile(
                parsed[0], parsed[1], info.st_size, datetime.fromtimestamp(info.st_mtime, UTC)
            )

    def sweep_partials(self, older_than: timedelta) -> list[Path]:
        """Removes ``.partial`` files not written to for ``older_than``; returns them."""
        return self._partials(older_than, remove=True)

    def partials(self, older_than: timedelta) -> list[Path]:
        """The ``.partial`` files ``sweep_partials(older_than)`` would remove."""
        return self._partials(older_than, remove=False)

    def _partials(self, older_than: timedelta, *, remove: bool) -> list[Path]:
        directory = self._ready_directory()
        cutoff = time.time() - older_than.total_seconds()
        found: list[Path] = []
        with _unavailable_on_os_error("sweep", directory):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                return found
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX)):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                        if remove:
                            os.unlink(entry.path)
                        found.append(Path(entry.path))
                except FileNotFoundError:
                    continue  # finished or swept meanwhile
        return found

    # --- the root --------------------------------------------------------------------------

    def _ready_directory(self, create: bool = False) -> Path:
        """``<root>/skillbase/workflow``; ``Unavailable`` if the root is missing or unmounted."""
        try:
            os.stat(self.root)
            mounted = os.path.ismount(self.root)
        except OSError as error:  # missing, or a FUSE mount whose daemon died (ENOTCONN)
            raise Unavailable(f"file store root {self.root} is not available: {error}") from error
        if self.require_mount and not mounted:
            raise Unavailable(f"file store root {self.root} is not mounted")
        if not self.root.is_dir():
            raise Unavailable(f"file store root {self.root} is not a directory")
        if create:
            with _unavailable_on_os_error("create", self.directory):
                parent = self.root
                for name in SUBDIRECTORY:  # never creates the root itself
                    parent = parent / name
                    parent.mkdir(mode=0o750, exist_ok=True)
        return self.directory


class _PartialFile:
    """One write in progress. Thread-safe: ``abort`` waits for a ``write`` in another thread."""

    def __init__(
        self, fd: int, temp: Path, final: Path, stored: StoredFile, store: PosixFileStore
    ) -> None:
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._temp = temp
        self._final = final
        self._stored = stored
        self._store = store
        self._size = 0
        self._hash = hashlib.sha256()
        self._committed = False
        self._lock = threading.Lock()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self._file is None:
                raise RuntimeError("write after commit or abort")
            if self._size + len(chunk) > self._store.max_bytes:
                raise self._store._too_large()
            if len(chunk) < OVERLAP_MIN:
                self._hash.update(chunk)
                with _unavailable_on_os_error("write", self._temp):
                    self._file.write(chunk)
            else:
                hashed = _HASHERS.submit(self._hash.update, chunk)
                try:
                    with _unavailable_on_os_error("write", self._temp):
                        self._file.write(chunk)
                finally:
                    hashed.result()  # the chunk is not touched again before this returns
            self._size += len(chunk)

    def commit(self) -> StoredFile:
        with self._lock:
            if self._file is None:
                raise RuntimeError("commit after commit or abort")
            with _unavailable_on_os_error("save", self._final):
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
                _publish(self._temp, self._final)
                self._committed = True
                _fsync_directory(self._final.parent)
            return StoredFile(
                self._stored.file_id,
                self._stored.extension,
                self._stored.media_type,
                self._size,
                self._hash.hexdigest(),
                self._final,
            )

    def abort(self) -> None:
        """Closes and removes the partial, unless ``commit`` renamed it."""
        with self._lock:
            if self._committed:
                return
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None
            try:
                os.unlink(self._temp)
            except OSError:
                pass  # left for sweep_partials


class _unavailable_on_os_error:
    """Turns an ``OSError`` (disk full, mount gone, I/O error) into ``Unavailable``."""

    def __init__(self, action: str, path: Path) -> None:
        self.action, self.path = action, path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            raise Unavailable(
                f"file store cannot {self.action} {self.path.name}: {error.strerror or error}"
            ) from error
        return False


def _file_id(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise InvalidInput(f"not a file id: {value!r}") from None


def _known_type(media_type: str) -> bool:
    try:
        extension_for(media_type)
    except Unsupported:
        return False
    return True


def _parse_name(name: str) -> tuple[UUID, str] | None:
    stem, dot, extension = name.partition(".")
    if not dot or not is_stored_extension(extension):
        return None
    try:
        file_id = UUID(stem)
    except ValueError:
        return None
    return (file_id, extension) if str(file_id) == stem else None


def _exists(path: Path) -> bool:
    try:
        os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _publish(temp: Path, final: Path) -> None:
    """Gives the fsynced temp file its final name: atomically, and never over another file.

    ``os.rename`` would silently replace a file whose sha256 is already on record. One
    ``renameat2(RENAME_NOREPLACE)`` refuses a taken name in a single metadata operation
    (JuiceFS measured 1.1 ms, against 1.7 ms for a link and an unlink, and nothing is left
    under two names if the process dies between them). Where the C library, kernel or
    filesystem lacks it, a hard link then an unlink; on a filesystem without hard links, a
    rename once the name is found free (the one path where two writers of one id, racing
    between that check and the rename, could replace each other's file).
    """
    if _rename_noreplace(temp, final):
        return
    try:
        os.link(temp, final)
    except FileExistsError:
        raise Conflict(f"file {final.name} already exists") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.ENOSYS):
            raise
        if _exists(final):
            raise Conflict(f"file {final.name} already exists") from None
        os.rename(temp, final)
        return
    try:
        os.unlink(temp)
    except OSError:
        pass  # the file is saved; sweep_partials removes the second name


def _libc_renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28+
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(temp: Path, final: Path) -> bool:
    """True once renamed; False where ``renameat2`` or its flag is not supported here."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(final), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise Conflict(f"file {final.name} already exists")
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(temp), None, str(final))


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.ENOSYS):
            raise
    finally:
        os.close(fd)

