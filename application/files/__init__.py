"""Evidence files: one store interface, a POSIX implementation (local disk or JuiceFS)."""

from .media_types import extension_for, media_type_for
from .store import FileStore, ListedFile, PosixFileStore, StoredFile

__all__ = [
    "FileStore",
    "ListedFile",
    "PosixFileStore",
    "StoredFile",
    "extension_for",
    "media_type_for",
]
