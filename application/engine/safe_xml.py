"""Hardened XML parsing for definition bundles (BPMN, DMN).

Definitions are uploaded by admins, but a bundle is still untrusted input: it is parsed
with no entity expansion, no DTD loading and no network, and any document that carries a
document type declaration is refused outright (XXE, billion laughs and external DTDs all
need one). Size is checked before parsing and nesting depth after it.
"""

from __future__ import annotations

import io
import re
from typing import NoReturn

from lxml import etree

from domain.errors import BundleInvalid, Problem

MAX_DEPTH = 200

# "<!DOCTYPE" as it appears in the byte encodings an XML document may start in without a BOM
# trick libxml2 would not also accept; anything rarer is caught after parsing by docinfo.
_DOCTYPE = re.compile(
    b"|".join(
        re.escape("<!DOCTYPE".encode(codec))
        for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
    )
)
_NO_DTD = "document type declarations (DTD/entities) are not allowed"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_xml(
    data: bytes, *, filename: str, max_bytes: int, max_depth: int = MAX_DEPTH
) -> etree._ElementTree:
    """Parse one bundle file, or raise ``BundleInvalid`` naming the file, reason and line."""
    if not isinstance(data, bytes):
        raise TypeError("parse_xml takes bytes, not text: the XML declaration names the encoding")
    if len(data) > max_bytes:
        _refuse(filename, f"file is {len(data)} bytes, limit {max_bytes}")
    found = _DOCTYPE.search(data)
    if found:
        _refuse(filename, _NO_DTD, line=_line_of(data, found.start()))
    try:
        tree = etree.parse(io.BytesIO(data), _parser())
    except etree.XMLSyntaxError as err:
        if "Excessive depth" in err.msg:  # libxml2's own cap (256) fired before ours
            _refuse(filename, f"elements nested deeper than {max_depth} levels", err.lineno)
        reason = " ".join(err.msg.split())
        _refuse(filename, f"not well-formed XML: {reason}", line=err.lineno or None)
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        _refuse(filename, _NO_DTD)
    _check_depth(tree, filename, max_depth)
    return tree


def _check_depth(tree: etree._ElementTree, filename: str, max_depth: int) -> None:
    depth = 0
    for event, element in etree.iterwalk(tree, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > max_depth:
            _refuse(filename, f"elements nested deeper than {max_depth} levels", element.sourceline)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1  # exact for UTF-8, close enough for UTF-16/32


def _refuse(filename: str, message: str, line: int | None = None) -> NoReturn:
    raise BundleInvalid(
        f"{filename} was refused", [Problem(path=filename, message=message, line=line)]
    )
