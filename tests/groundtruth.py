"""An independent crawler for ground truth: the standard library only (``urllib.request``
and ``html.parser``), one thread, breadth first, so nothing of spiderfarm (nor aiohttp,
lxml, parsel, w3lib) decides what it finds.

It follows what a generic follow-all spider follows, ``<a href>`` and nothing else (not
``<link>``, ``<area>``, ``<frame src>``), resolved against the first ``<base href>``,
with the fragment dropped, on the start URL's host and port only. Every such URL is
fetched (GET; redirects followed); a page is a final URL that answered 200 with
``Content-Type: text/html``, and only pages are parsed for links.

Checked once against ``wget -r`` on every corpus set: the same pages, except that wget
also follows ``<link rel=search>`` to Sphinx's ``search.html``, which no ``<a>`` names.
"""

from __future__ import annotations

import codecs
import re
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote, urldefrag, urljoin, urlsplit

__all__ = ["GroundTruth", "LinkParser", "crawl", "normalise_space"]


@dataclass
class GroundTruth:
    """What the crawl found, keyed by absolute URL."""

    start_url: str
    pages: dict[str, str | None] = field(default_factory=dict)  # final URL -> <title> text
    other: dict[str, str] = field(default_factory=dict)  # URL -> status or content type
    fetched: int = 0  # requests made
    duration_s: float = 0.0


def normalise_space(text: str | None) -> str:
    """``text`` with runs of whitespace as one space, trimmed (``None`` as ``""``)."""
    return " ".join((text or "").split())


class LinkParser(HTMLParser):
    """Collects ``<a href>`` values, the first ``<base href>`` and the first ``<title>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base_href: str | None = None
        self.title: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href is not None:
                self.hrefs.append(href)
        elif tag == "base" and self.base_href is None:
            self.base_href = dict(attrs).get("href")
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = "".join(self._title_parts)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9._:-]+)""")


def decode(body: bytes, header_charset: str | None) -> str:
    """Body as text: the HTTP charset, a BOM, ``<meta charset>`` or the XML declaration
    in the first 4 KiB, else UTF-8; undecodable bytes are replaced."""
    candidates: list[str] = []
    if header_charset:
        candidates.append(header_charset)
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if body.startswith(bom):
            candidates.append(name)
    head = body[:4096]
    for pattern in (_META_CHARSET, _XML_ENCODING):
        match = pattern.search(head)
        if match:
            candidates.append(match.group(1).decode("ascii"))
    for name in [*candidates, "utf-8"]:
        try:
            return body.decode(name, "replace")
        except LookupError:
            continue
    raise AssertionError("utf-8 is always a known codec")


def _request_form(url: str) -> str:
    # urllib sends the URL as given and needs ASCII: percent-encode what a browser would.
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def crawl(start_url: str, *, timeout_s: float = 10.0) -> GroundTruth:
    """Breadth-first crawl from ``start_url`` over its own host and port."""
    origin = urlsplit(start_url).netloc
    truth = GroundTruth(start_url)
    started = time.monotonic()
    first = _request_form(urldefrag(start_url).url)
    queue: deque[str] = deque([first])
    seen = {first}
    while queue:
        url = queue.popleft()
        truth.fetched += 1
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                final = resp.url
                status = resp.status
                ctype = resp.headers.get_content_type()
                charset = resp.headers.get_content_charset()
                body = resp.read()
        except urllib.error.HTTPError as err:
            with err:
                truth.other[url] = f"http_{err.code}"
            continue
        if urlsplit(final).netloc != origin:
            truth.other[url] = f"redirect off site to {final}"
            continue
        seen.add(final)
        if status != 200 or ctype != "text/html":
            truth.other[final] = f"{status} {ctype}"
            continue
        if final in truth.pages:  # a second way in, through a redirect
            continue
        parser = LinkParser()
        parser.feed(decode(body, charset))
        parser.close()
        truth.pages[final] = parser.title
        base = final
        if parser.base_href is not None:
            candidate = urljoin(final, parser.base_href.strip())
            if urlsplit(candidate).scheme in ("http", "https"):
                base = candidate
        for href in parser.hrefs:
            href = href.strip()
            if not href:
                continue
            link = _request_form(urldefrag(urljoin(base, href)).url)
            parts = urlsplit(link)
            if parts.scheme not in ("http", "https") or parts.netloc != origin:
                continue
            if link not in seen:
                seen.add(link)
                queue.append(link)
    truth.duration_s = time.monotonic() - started
    return truth
