"""``Response``: what a callback receives. It never leaves the worker that fetched it,
and parses its body only when a callback first asks for ``.text`` or a selector.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from parsel import Selector, SelectorList
from w3lib.encoding import html_to_unicode, http_content_type_encoding, read_bom
from w3lib.html import get_base_url

from .request import Request, _callback_name
from .urls import FETCHABLE_SCHEMES, MAX_URL_LENGTH, SAFE_CHARS, safe_url

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

logger = logging.getLogger(__name__)

_BASE_TAG = re.compile(r"<base\b", re.IGNORECASE)  # cheap test before w3lib's full parse

__all__ = ["Response"]


class Response:
    """A fetched page. Decoding and parsing happen on first use, not on arrival."""

    __slots__ = (
        "_base_origin", "_base_url", "_encoding", "_selector", "_text", "body", "headers",
        "request", "status", "url",
    )  # fmt: skip

    def __init__(
        self,
        url: str,
        status: int,
        headers: CIMultiDictProxy[str] | Mapping[str, str],
        body: bytes,
        request: Request,
    ) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body
        self.request = request
        self._text: str | None = None
        self._encoding: str | None = None
        self._selector: Selector | None = None
        self._base_url: str | None = None
        self._base_origin: str | None = None  # of a base URL known safe; see base_url

    def __repr__(self) -> str:
        return f"<{self.status} {self.url}>"

    @property
    def meta(self) -> dict[str, Any]:
        if self.request.meta is None:
            self.request.meta = {}
        return self.request.meta

    @property
    def cb_kwargs(self) -> dict[str, Any]:
        return self.request.cb_kwargs or {}

    def _decode(self) -> None:
        encoding, text = _to_unicode(self.headers.get("Content-Type", ""), self.body)
        # NUL bytes break lxml; nothing legitimate in HTML text needs them.
        self._text = text.replace("\x00", "\ufffd") if "\x00" in text else text
        self._encoding = encoding

    @property
    def text(self) -> str:
        """The body decoded: HTTP charset, then BOM and ``<meta charset>``, then a guess."""
        if self._text is None:
            self._decode()
        assert self._text is not None
        return self._text

    @property
    def encoding(self) -> str:
        if self._encoding is None:
            self._decode()
        assert self._encoding is not None
        return self._encoding

    @property
    def selector(self) -> Selector:
        if self._selector is None:
            self._selector = Selector(text=self.text, base_url=self.url)
        return self._selector

    def css(self, query: str) -> SelectorList[Selector]:
        return self.selector.css(query)

    def xpath(self, query: str, **kwargs: Any) -> SelectorList[Selector]:
        return self.selector.xpath(query, **kwargs)

    def json(self) -> Any:
        """The body parsed as JSON (as ``.text``: the declared charset is honoured); raises
        ``ValueError`` naming the URL if it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError as exc:
            raise ValueError(f"response from {self.url} is not JSON: {exc}") from None

    @property
    def base_url(self) -> str:
        """The URL links are relative to: ``<base href>`` if the page has a usable one (it
        parses and passes ``safe_url``), else the page's own URL."""
        if self._base_url is None:
            self._base_url = self.url
            text = self.text
            if _BASE_TAG.search(text):
                try:
                    self._base_url = safe_url(get_base_url(text, self.url))
                except ValueError as exc:  # a bad port or host, a broken IPv6 literal ...
                    logger.debug("ignoring the <base href> of %s: %s", self.url, exc)
            # Only a base whose host and port passed safe_url (or the page's own URL) may
            # take follow_all's shortcut, which trusts its origin without re-validation.
            self._base_origin = _origin(self._base_url)
        return self._base_url

    def urljoin(self, url: str) -> str:
        return urljoin(self.base_url, url)

    def follow(self, url: str | Selector, callback: Any = None, **kwargs: Any) -> Request:
        """A ``Request`` for ``url`` (a string, an ``<a>``/``<link>`` selector or an
        attribute selector), relative to this page."""
        if isinstance(url, Selector):
            url = _url_from_selector(url)
        return Request(self.urljoin(url), callback=callback, **kwargs)

    def follow_all(
        self,
        urls: Iterable[str | Selector] | None = None,
        callback: Any = None,
        *,
        css: str | None = None,
        xpath: str | None = None,
        **kwargs: Any,
    ) -> Iterator[Request]:
        """Requests for many links; ``mailto:``, ``javascript:`` and other non-HTTP links
        are skipped quietly, as are empty ``href``s."""
        if sum(x is not None for x in (urls, css, xpath)) != 1:
            raise ValueError("follow_all takes exactly one of urls, css or xpath")
        if css is not None:
            urls = self.css(css)
        elif xpath is not None:
            urls = self.xpath(xpath)
        assert urls is not None
        # Checked now, not when the caller first iterates: a bad callback is the spider's bug.
        name = _callback_name(callback, "callback")
        return self._follow_all(urls, name, kwargs)

    def _follow_all(
        self, urls: Iterable[str | Selector], callback: str | None, kwargs: dict[str, Any]
    ) -> Iterator[Request]:
        base = self.base_url
        # The hot path of a crawl: most links are root-relative ("/p/1.html"). Those are
        # the base's origin plus the href, and from a validated base URL with safe
        # characters they need neither urljoin (~9 us) nor re-validation (~6 us).
        origin = self._base_origin if not kwargs else None
        for link in urls:
            href = _url_from_selector(link, True) if isinstance(link, Selector) else link
            if not href or not (href := href.strip()):
                continue
            if (
                origin is not None
                and href[0] == "/"
                and href[1:2] != "/"
                and "/." not in href
                and href.isascii()
                and SAFE_CHARS.issuperset(href)
                and len(origin) + len(href) <= MAX_URL_LENGTH
                # urljoin drops an empty query, fragment or last-segment params ("/a?",
                # "/a#", "/a;?b"); such rare links take the slow path.
                and href[-1] not in "?#;"
                and "?#" not in href
                and (";" not in href or (";?" not in href and ";#" not in href))
            ):
                yield Request._trusted(origin + href, callback)
                continue
            try:
                absolute = urljoin(base, href)
                if urlsplit(absolute).scheme not in FETCHABLE_SCHEMES:
                    continue
                yield Request(absolute, callback=callback, **kwargs)
            except ValueError as exc:  # InvalidRequest, or a link urljoin cannot parse
                # One bad link must not cost the page its other links and items.
                logger.debug("skipping link on %s: %s", self.url, exc)


def _origin(base: str) -> str | None:
    """``scheme://netloc`` of an http(s) URL, or None if it is anything unusual."""
    scheme, sep, rest = base.partition("://")
    slash = rest.find("/")
    netloc = rest if slash == -1 else rest[:slash]
    if not sep or scheme not in FETCHABLE_SCHEMES or not netloc or "\\" in netloc:
        return None
    if "?" in netloc or "#" in netloc:
        return None
    return f"{scheme}://{netloc}"


def _url_from_selector(sel: Selector, missing_ok: bool = False) -> str:
    root = sel.root
    if isinstance(root, str):  # the result of ::attr(href) or /@href
        return root
    tag = getattr(root, "tag", None)
    if tag not in ("a", "link"):
        raise ValueError(f"only <a> and <link> selectors can be followed, got <{tag}>")
    href = root.get("href")
    if href is None:
        if missing_ok:  # <a name="top">: nothing to follow
            return ""
        raise ValueError(f"<{tag}> element has no href attribute")
    return str(href)


def _to_unicode(content_type: str, body: bytes) -> tuple[str, str]:
    """``(encoding, text)`` of a body: w3lib's choice (HTTP charset, BOM, ``<meta>``), but
    never an exception. A charset that cannot decode text (``rot13``, ``base64``, and
    ``undefined`` or ``idna``, which refuse ``errors="replace"``) is dropped for the page's
    own declaration, then UTF-8. A ``<meta>`` naming UTF-16 or UTF-32 is read as UTF-8, as
    browsers do: the bytes it was found in were ASCII."""
    for header in (content_type, "text/html"):
        try:
            encoding, text = html_to_unicode(header, body)
        except (LookupError, ValueError):  # UnicodeError is a ValueError
            continue
        if (
            encoding.startswith(("utf-16", "utf-32"))
            and http_content_type_encoding(header) is None
            and read_bom(body)[0] is None
        ):
            break
        return encoding, text
    return "utf-8", body.decode("utf-8", "replace")
