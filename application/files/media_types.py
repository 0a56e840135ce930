"""Extension <-> media type, from one fixed table.

The table is explicit on purpose: ``mimetypes`` reads the host's ``/etc/mime.types`` and its
built-in defaults change between Python versions (``image/webp`` only arrived in 3.13), so a
file written on one machine could get another name or type on the next. Every media type
has exactly one extension, the one used in file names; a few extra spellings (``jpeg``) are
understood when a type is looked up but are never written.
"""

from __future__ import annotations

from types import MappingProxyType

from domain.errors import Unsupported

# media type -> the extension files of that type are stored with
EXTENSIONS = MappingProxyType(
    {
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/webp": "webp",
        "image/gif": "gif",
        "image/heic": "heic",
        "application/pdf": "pdf",
        "video/mp4": "mp4",
        "video/webm": "webm",
        "video/quicktime": "mov",
        "audio/mpeg": "mp3",
        "text/plain": "txt",
        "text/csv": "csv",
        "application/json": "json",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
        "application/vnd.oasis.opendocument.text": "odt",
    }
)

# extension -> media type, with the extra spellings
MEDIA_TYPES = MappingProxyType(
    {ext: media_type for media_type, ext in EXTENSIONS.items()}
    | {"jpeg": "image/jpeg", "jpe": "image/jpeg", "text": "text/plain"}
)


def normalize(media_type: str) -> str:
    """``Image/JPEG; charset=x`` -> ``image/jpeg``: parameters dropped, lower case."""
    return media_type.split(";", 1)[0].strip().lower()


def extension_for(media_type: str) -> str:
    """The extension a file of ``media_type`` is stored with; ``Unsupported`` if unknown."""
    try:
        return EXTENSIONS[normalize(media_type)]
    except KeyError:
        raise Unsupported(f"unknown media type {media_type!r}") from None


def media_type_for(extension: str) -> str:
    """The media type of a file stored with ``extension`` (with or without the dot)."""
    try:
        return MEDIA_TYPES[extension.lower().removeprefix(".")]
    except KeyError:
        raise Unsupported(f"unknown file extension {extension!r}") from None


def is_stored_extension(extension: str) -> bool:
    """True for an extension the store writes: lower case, canonical, in the table."""
    return extension in MEDIA_TYPES and EXTENSIONS[MEDIA_TYPES[extension]] == extension
