"""Which kind of response a fetched body is, decided as Scrapy's ``responsetypes`` does.

The ``Content-Type`` decides. Only when it is missing or says no more than
``application/octet-stream`` do the ``Content-Disposition`` filename, the URL's extension
and then a sniff of the body's first 5,000 bytes decide, so that the usual response costs
a header lookup and a few string operations.

Where this differs from Scrapy (2.12 to 2.19), on purpose:

- any ``*+xml`` type is XML and any ``*+json`` type (and ``text/json``) is JSON; Scrapy
  knows the RSS, Atom and RDF types by name and makes other ``application/*`` binary;
- a declared type that is not text (``image/png``, ``application/pdf``) is final: Scrapy
  goes on to the URL and a body sniff for any type it does not know;
- ``Content-Encoding`` is ignored: the fetcher has decoded the body already;
- the body sniff counts ``<html`` with attributes, so an XHTML page that starts with an
  XML declaration and has no ``Content-Type`` is HTML, not XML.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

__all__ = ["ResponseKind", "mimetype_kind", "response_kind"]

ResponseKind = Literal["html", "xml", "json", "text", "binary"]
"""``HtmlResponse``, ``XmlResponse``, ``JsonResponse``, ``TextResponse`` or ``Response``."""

_BY_MIMETYPE: Final[dict[str, ResponseKind]] = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/vnd.wap.xhtml+xml": "html",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/json": "json",
    "application/x-json": "json",
    "text/json": "json",
    "text/x-json": "json",
    "application/javascript": "text",
    "application/x-javascript": "text",
    "application/ecmascript": "text",
    "application/json-amazonui-streaming": "text",
}
# Types that say "bytes" and nothing more (S3 serves binary/octet-stream).
_UNDECLARED: Final = frozenset({"application/octet-stream", "binary/octet-stream"})

# Python's built-in table only (never /etc/mime.types, which differs between machines),
# plus the extensions of the web's markup that it lacks.
_MIMETYPES: Final = mimetypes.MimeTypes()
for _ext, _type in (
    (".xhtml", "application/xhtml+xml"),
    (".xht", "application/xhtml+xml"),
    (".shtml", "text/html"),
    (".rss", "application/rss+xml"),
    (".atom", "application/atom+xml"),
):
    _MIMETYPES.add_type(_type, _ext)

# Control characters that text does not contain (Scrapy's binary_is_text: NUL, tab, LF
# and CR are allowed). bytes.translate finds them several times faster than a regex.
_BINARY_BYTES: Final = bytes([*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_HTML_MARK: Final = re.compile(rb"<html[\s>]|<!doctype\s+html", re.IGNORECASE)
_XML_MARK: Final = re.compile(rb"<\?xml", re.IGNORECASE)
_SNIFF_BYTES: Final = 5000


def mimetype_kind(mimetype: str) -> ResponseKind | None:
    """The kind a lower-case ``type/subtype`` names, or None if it names none (missing,
    malformed or octet-stream)."""
    kind = _BY_MIMETYPE.get(mimetype)
    if kind is not None:
        return kind
    if mimetype in _UNDECLARED or "/" not in mimetype:
        return None
    if mimetype.endswith("+xml"):
        return "xml"
    if mimetype.endswith("+json"):
        return "json"
    if mimetype.startswith("text/"):
        return "text"
    return "binary"


def response_kind(
    headers: CIMultiDictProxy[str] | Mapping[str, str], url: str, body: bytes
) -> ResponseKind:
    """The kind of a response: its ``Content-Type``; if that says nothing, the
    ``Content-Disposition`` filename, the URL's extension, then the body."""
    content_type = headers.get("Content-Type")
    if content_type:
        kind = mimetype_kind(content_type.partition(";")[0].strip().lower())
        if kind is not None:
            return kind
    # As Scrapy's from_args: a name that guesses a binary type lets the body decide.
    disposition = headers.get("Content-Disposition")
    if disposition:
        kind = _filename_kind(_disposition_filename(disposition))
        if kind is not None and kind != "binary":
            return kind
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    kind = _filename_kind(path)
    if kind is not None and kind != "binary":
        return kind
    return _body_kind(body)


def _disposition_filename(disposition: str) -> str:
    """The ``filename`` (or RFC 6266 ``filename*``) parameter, ``""`` if there is none."""
    for param in disposition.split(";")[1:]:
        name, _, value = param.partition("=")
        name = name.strip().lower()
        if name in ("filename", "filename*"):
            value = value.strip().strip("\"'")
            # filename*=UTF-8''report.html: the name follows the second quote.
            return value.rpartition("'")[2] if name == "filename*" else value
    return ""


def _filename_kind(filename: str) -> ResponseKind | None:
    if not filename:
        return None
    mimetype, encoding = _MIMETYPES.guess_type(filename)
    if mimetype is None or encoding is not None:  # "feed.xml.gz" is gzip, not XML
        return None
    return mimetype_kind(mimetype)


def _body_kind(body: bytes) -> ResponseKind:
    chunk = body[:_SNIFF_BYTES]
    if len(chunk.translate(None, _BINARY_BYTES)) != len(chunk):
        return "binary"
    # Scrapy's order (<html>, then <?xml, then <!doctype html>) would make an XHTML page
    # with an XML declaration XML: HTML marks go first here.
    if _HTML_MARK.search(chunk):
        return "html"
    if _XML_MARK.search(chunk):
        return "xml"
    return "text"
