"""Reading sitemaps: ``<urlset>`` and ``<sitemapindex>`` files (Scrapy's
``scrapy.utils.sitemap.Sitemap``), the ``Sitemap:`` lines of a robots.txt, and gzipped
sitemap bodies decompressed under a size cap.

The XML parser never resolves entities, reads no DTD or network resource, and keeps
lxml's limits on huge trees: a sitemap cannot make it read files or expand an entity bomb.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Iterator
from io import BytesIO
from typing import Any
from urllib.parse import urljoin

from lxml import etree
from protego import Protego

__all__ = ["DecompressedTooLarge", "Sitemap", "gunzip", "is_gzip", "sitemap_urls_from_robots"]

_CHUNK_BYTES = 64 * 1024


class DecompressedTooLarge(ValueError):
    """A gzipped body decompresses to more than the cap."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.max_bytes = max_bytes

    def __str__(self) -> str:
        return f"decompressed body over {self.max_bytes} bytes"


def is_gzip(body: bytes) -> bool:
    """Whether ``body`` starts as a gzip (deflate) stream does."""
    return body[:3] == b"\x1f\x8b\x08"


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """``data`` decompressed, in 64 KiB steps so that at most ``max_bytes`` are ever held.
    A stream that is cut short or fails its checksum gives what decompressed before the
    damage, as Scrapy's ``gunzip`` does.

    Raises:
        DecompressedTooLarge: the output would exceed ``max_bytes``.
        ValueError: ``data`` is not gzip, or nothing could be decompressed.
    """
    stream = gzip.GzipFile(fileobj=BytesIO(data))
    out = BytesIO()
    size = 0
    while True:
        try:
            chunk = stream.read1(_CHUNK_BYTES)
        except (OSError, EOFError, struct.error, zlib.error) as exc:
            if size:
                break
            raise ValueError(f"not a readable gzip stream: {exc}") from None
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise DecompressedTooLarge(max_bytes)
        out.write(chunk)
    return out.getvalue()


def _local_name(el: Any) -> str:
    tag = el.tag
    if not isinstance(tag, str):  # a comment or processing instruction
        return ""
    return tag.rpartition("}")[2]


class Sitemap:
    """A sitemap (``type`` ``"urlset"``) or sitemap index (``"sitemapindex"``) read as
    it streams: iterate for one dict per ``<url>``/``<sitemap>`` entry with a ``<loc>``,
    keyed by each child's local name (``loc``, ``lastmod``, ``changefreq``, ``priority``
    ...), plus ``alternate``: the ``href``s of its ``<xhtml:link>`` children, if any."""

    __slots__ = ("_events", "type")

    def __init__(self, body: bytes) -> None:
        self._events = etree.iterparse(
            BytesIO(body),
            events=("start", "end"),
            recover=True,
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            remove_blank_text=True,
            collect_ids=False,
        )
        try:
            _, root = next(self._events)
        except (StopIteration, etree.XMLSyntaxError):
            self.type = ""
            self._events = iter(())
            return
        self.type = _local_name(root)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for event, el in self._events:
                if event == "end" and _local_name(el) in ("url", "sitemap"):
                    entry = self._entry(el)
                    if entry is not None:
                        yield entry
        except etree.XMLSyntaxError:
            return  # what came before the damage has been given

    @staticmethod
    def _entry(el: Any) -> dict[str, Any] | None:
        entry: dict[str, Any] = {}
        alternate: list[str] = []
        for child in el:
            name = _local_name(child)
            if not name:
                continue
            if name == "link":
                href = child.get("href")
                if href:
                    alternate.append(href)
            else:
                entry[name] = child.text.strip() if child.text else ""
        # Free what was read: a 50,000-entry sitemap is held one entry at a time.
        el.clear()
        parent = el.getparent()
        if parent is not None:
            while el.getprevious() is not None:
                del parent[0]
        if "loc" not in entry:
            return None
        if alternate:
            entry["alternate"] = alternate
        return entry


def sitemap_urls_from_robots(robots_text: str, base_url: str = "") -> Iterable[str]:
    """The ``Sitemap:`` URLs of a robots.txt (protego's reading), joined to ``base_url``."""
    for url in Protego.parse(robots_text).sitemaps:
        yield urljoin(base_url, url)
