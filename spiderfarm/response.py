"""The responses a callback receives, one class per kind of body: ``HtmlResponse``,
``XmlResponse``, ``JsonResponse``, ``TextResponse`` and the binary ``Response`` (Scrapy's
classes; ``spiderfarm.responsetypes`` chooses). A response never leaves the worker that
fetched it, and decodes and parses its body only when a callback first asks.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, cast
from urllib.parse import urljoin, urlsplit

import cssselect
from lxml import etree
from parsel.csstranslator import HTMLTranslator
from w3lib.encoding import (
    html_body_declared_encoding,
    html_to_unicode,
    http_content_type_encoding,
    read_bom,
)

from .errors import NotSupported
from .request import Request, _callback_name
from .responsetypes import ResponseKind, response_kind
from .selector import Selector, SelectorList
from .urls import FETCHABLE_SCHEMES, MAX_URL_LENGTH, SAFE_CHARS, safe_url

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

logger = logging.getLogger(__name__)

_BASE_TAG = re.compile(r"<base\b", re.IGNORECASE)  # cheap test before the tree is searched
_HTML_SPACE = " \t\n\r\x0c"  # what HTML strips from a URL attribute

__all__ = [
    "HtmlResponse",
    "JsonResponse",
    "Response",
    "TextResponse",
    "XmlResponse",
    "response_for",
]


class Response:
    """A fetched response. This base class is the binary kind (an image, a PDF, an
    archive): ``.body``, ``.urljoin()`` and ``.follow(url)`` work; ``.text``, ``.encoding``,
    ``.json()`` and the selectors raise ``NotSupported``. Text kinds are subclasses:
    ``TextResponse`` and its ``HtmlResponse``, ``XmlResponse`` and ``JsonResponse``.

    ``Response(url, status, headers, body, request)`` on this class itself builds the kind
    its headers, URL and body say (as ``response_for`` does), so code written before the
    kinds existed still gets ``.text`` and ``.css()`` on an HTML page; call a subclass
    (``HtmlResponse(...)``) to choose the kind yourself. Nothing is decoded or parsed
    until a callback asks.
    """

    __slots__ = (
        "_base_dir", "_base_origin", "_base_self", "_base_url", "body", "headers", "request",
        "status", "url",
    )  # fmt: skip

    _kind: ClassVar[str] = "binary"  # as NotSupported names it
    _markup: ClassVar[bool] = False  # may hold <a href> and <base href> for css/xpath
    _base_xpath: ClassVar[str] = ""

    def __new__(
        cls,
        url: str,
        status: int,
        headers: CIMultiDictProxy[str] | Mapping[str, str],
        body: bytes,
        request: Request,
    ) -> Self:
        kind = _CLASSES[response_kind(headers, url, body)] if cls is Response else cls
        return cast("Self", object.__new__(kind))

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
        self._base_url: str | None = None
        self._base_origin: str | None = None  # of a base URL known safe; see base_url
        self._base_dir: str | None = None  # its directory, when joins may be cached
        self._base_self: str | None = None  # urljoin(base, "#x") less "#x": see urljoin

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

    def _unsupported(self, action: str) -> NotSupported:
        content_type = self.headers.get("Content-Type") or ""
        return NotSupported(self.url, content_type, action, self._kind)

    @property
    def text(self) -> str:
        """The body decoded (text kinds). Raises ``NotSupported`` on a binary response."""
        raise self._unsupported(".text")

    @property
    def encoding(self) -> str:
        raise self._unsupported(".encoding")

    @property
    def selector(self) -> Selector:
        raise self._unsupported(".selector")

    def css(self, query: str) -> SelectorList[Selector]:
        raise self._unsupported(".css()")

    def xpath(self, query: str, **kwargs: Any) -> SelectorList[Selector]:
        raise self._unsupported(".xpath()")

    def json(self) -> Any:
        raise self._unsupported(".json()")

    @property
    def base_url(self) -> str:
        """The URL links are relative to: the first ``<base href>`` of the parsed page if
        it is usable (it parses and passes ``safe_url``), else the response's own URL."""
        if self._base_url is None:
            base = self.url
            # Read from the tree the selectors see, not by a regex over the text, which
            # takes a "<base" in a <title>, an attribute or a CDATA section for a tag and
            # leaves "&amp;" escaped. The regex only spares pages without one a parse.
            if self._markup and self._has_base_tag():
                href = (self.selector.xpath(self._base_xpath).get() or "").strip(_HTML_SPACE)
                try:
                    base = safe_url(urljoin(self.url, href)) if href else base
                except ValueError as exc:  # a bad port or host, a broken IPv6 literal ...
                    logger.debug("ignoring the <base href> of %s: %s", self.url, exc)
            # Only a base whose host and port passed safe_url (or the page's own URL) may
            # take follow_all's shortcut, which trusts its origin without re-validation.
            self._base_origin = origin = _origin(base)
            self._base_dir = _directory(base, origin) if origin is not None else None
            self._base_url = base
        return self._base_url

    def _has_base_tag(self) -> bool:
        """Whether the page may hold a ``<base>`` (False: it surely holds none)."""
        return bool(_BASE_TAG.search(self.text))

    def urljoin(self, url: str) -> str:
        """``urllib.parse.urljoin(self.base_url, url)``, exactly (from a cache when that
        is the same: see ``cached_urljoin``)."""
        base = self.base_url
        if url[:1] == "#" and len(url) > 1 and self._base_dir is not None and _no_tab(url):
            # A fragment alone, which Sphinx and javadoc pages have by the hundred: the
            # base as urljoin rebuilds it, and the fragment.
            own = self._base_self
            if own is None:
                own = self._base_self = urljoin(base, "#x")[:-2]
            return own + url
        return cached_urljoin(base, self._base_dir, self._base_origin, url)

    def follow(self, url: str | Selector, callback: Any = None, **kwargs: Any) -> Request:
        """A ``Request`` for ``url`` (a string, an ``<a>``/``<link>`` selector or an
        attribute selector), relative to this page."""
        if isinstance(url, Selector):
            url = _url_from_selector(url)
        elif not kwargs:
            # The per-link idiom passes URLs the spider has already joined: one on this
            # page's validated origin, with a path urljoin and safe_url leave as it is,
            # needs neither again (follow_all's shortcut for root-relative links).
            _ = self.base_url  # validates the base and sets its origin
            origin = self._base_origin
            if origin is not None:
                if url.startswith(origin):
                    path = url[len(origin) :]
                    if path and _trusted_path(path, len(origin)):
                        return Request._trusted(url, _callback_name(callback, "callback"))
                elif url[:1] == "/" and _trusted_path(url, len(origin)):
                    return Request._trusted(origin + url, _callback_name(callback, "callback"))
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
        are skipped quietly, as are empty ``href``s. ``css`` or ``xpath`` on a response
        that is not HTML, XML or text (binary, JSON) gives nothing, logged once per
        content type."""
        if sum(x is not None for x in (urls, css, xpath)) != 1:
            raise ValueError("follow_all takes exactly one of urls, css or xpath")
        # Checked now, not when the caller first iterates: a bad callback is the spider's bug.
        name = _callback_name(callback, "callback")
        if urls is None:
            if not self._markup:
                self._no_links_to_select("css" if css is not None else "xpath")
                return iter(())
            return self._follow_all(self._link_nodes(css, xpath), name, kwargs)
        return self._follow_all(urls, name, kwargs)

    def _link_nodes(self, css: str | None, xpath: str | None) -> Iterable[str | Selector]:
        """What ``css``/``xpath`` selects, as ``follow_all`` reads it: the ``href`` of each
        ``<a>`` and ``<link>`` element and each string (``::attr(href)``). On HTML this
        asks lxml directly, with the query parsel would run, and wraps no element in a
        Selector (a page of 300 links saves about 1 ms); anything else takes parsel's way."""
        selector = self.selector
        if selector.type != "html" or css is None:
            return self.css(css) if css is not None else self.xpath(xpath or "")
        try:
            hrefs = _compiled_hrefs(css, selector.namespaces)
            if hrefs is not None:  # css selects <a> or <link> only: lxml reads their href
                return cast("list[str]", hrefs(selector.root))
            nodes = _compiled_css(css, selector.namespaces)(selector.root)
        except etree.XPathError as exc:  # as parsel words it
            raise ValueError(f"XPath error: {exc} in {_css_to_xpath(css)}") from None
        return _hrefs(nodes)

    def _no_links_to_select(self, how: str) -> None:
        content_type = self.headers.get("Content-Type") or ""
        key = (self._kind, content_type.partition(";")[0].strip().lower()[:100])
        if key in _TOLD_NO_LINKS or len(_TOLD_NO_LINKS) >= _MAX_TOLD:
            return
        _TOLD_NO_LINKS.add(key)
        logger.warning(
            "follow_all(%s=...) follows nothing on %s: it is a %s response (%s), with no "
            "HTML or XML to select links from; not logged again for %s responses of this "
            "type in this process",
            how, self.url, self._kind,
            f"Content-Type {key[1]!r}" if key[1] else "no Content-Type", self._kind,
        )  # fmt: skip

    def _follow_all(
        self, urls: Iterable[str | Selector], callback: str | None, kwargs: dict[str, Any]
    ) -> Iterator[Request]:
        base = self.base_url
        # The hot path of a crawl. Root-relative links ("/p/1.html") from a validated base
        # with safe characters are the origin plus the href: neither urljoin (~5 us) nor
        # re-validation (~3 us). Others are joined and made safe once per directory of
        # the site: a crawl's pages share their navigation.
        origin = self._base_origin if not kwargs else None
        directory = self._base_dir if not kwargs else None
        followed = _FOLLOWED
        # A link to a fragment of this very page names the request being answered: the
        # farm has seen it (unless dont_filter), so it would only be dropped as a
        # duplicate. It is skipped here, before a Request is made for it.
        request = self.request
        self_links = (
            base == self.url == request.url
            and not request.dont_filter
            and request.method == "GET"
            and request.body is None
        )
        for link in urls:
            href = _url_from_selector(link, True) if isinstance(link, Selector) else link
            if not href or not (href := href.strip()):
                continue
            if self_links and href[0] == "#":
                continue
            if origin is not None and _trusted_path(href, len(origin)):
                yield Request._trusted(origin + href, callback)
                continue
            key = fragment = None
            if directory is not None and origin is not None:
                at = _fragment_at(href)
                if at != -1:
                    key = _join_key(directory, origin, href[:at])
                    if key is not None:
                        href, fragment = href[:at], href[at:]
                if key is None:
                    key = _join_key(directory, origin, href)
            if key is not None:
                url = followed.get(key)
                if url is None:
                    if len(followed) > _CACHE_MAX:
                        followed.clear()
                    url = followed[key] = _followable(base, href)
                if url and fragment is not None:
                    url += fragment
                    if len(url) > MAX_URL_LENGTH:
                        continue
                if url:
                    yield Request._trusted(url, callback)
                continue
            try:
                absolute = urljoin(base, href)
                if urlsplit(absolute).scheme not in FETCHABLE_SCHEMES:
                    continue
                yield Request(absolute, callback=callback, **kwargs)
            except ValueError as exc:  # InvalidRequest, or a link urljoin cannot parse
                # One bad link must not cost the page its other links and items.
                logger.debug("skipping link on %s: %s", self.url, exc)


class TextResponse(Response):
    """A response whose body is text: decoded (HTTP charset, then BOM and ``<meta
    charset>`` or the XML declaration, then a guess; never a crash on a mislabelled page)
    and parsed only when first asked. Its selector parses HTML, as Scrapy's does for a
    plain ``TextResponse`` (``text/plain``, ``text/css``, JavaScript)."""

    __slots__ = ("_encoding", "_selector", "_text")

    _kind = "text"
    _markup = True
    _selector_type: ClassVar[str] = "html"
    _base_xpath: ClassVar[str] = "//base/@href"  # lxml's HTML tags are lower case

    def __init__(
        self,
        url: str,
        status: int,
        headers: CIMultiDictProxy[str] | Mapping[str, str],
        body: bytes,
        request: Request,
    ) -> None:
        super().__init__(url, status, headers, body, request)
        self._text: str | None = None
        self._encoding: str | None = None
        self._selector: Selector | None = None

    def _decode(self) -> None:
        encoding, text = _to_unicode(self.headers.get("Content-Type") or "", self.body)
        # NUL bytes break lxml; nothing legitimate in HTML or XML text needs them.
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
            as_is = (
                _utf8_as_is(self.headers.get("Content-Type") or "", self.body)
                if self._selector_type == "html"
                else None
            )
            if as_is is not None:
                # lxml reads the UTF-8 bytes itself: the tree parsel builds from the
                # decoded text, without decoding 100 KB to encode it back (see _utf8_as_is).
                self._selector = Selector(
                    body=self.body, encoding="utf-8", type="html", base_url=self.url
                )
                if self._encoding is None:
                    self._encoding = as_is
            else:
                self._selector = Selector(
                    text=self.text, type=self._selector_type, base_url=self.url
                )
        return self._selector

    def _has_base_tag(self) -> bool:
        selector = self._selector
        if selector is None or selector.type != "html":
            return super()._has_base_tag()
        # The parsed tree says, for the price of a lookup: lxml finds no "base" element
        # at once in a document whose names do not include it.
        return next(selector.root.iter("base"), None) is not None

    def css(self, query: str) -> SelectorList[Selector]:
        return self.selector.css(query)

    def xpath(self, query: str, **kwargs: Any) -> SelectorList[Selector]:
        return self.selector.xpath(query, **kwargs)

    def jmespath(self, query: str, **kwargs: Any) -> SelectorList[Selector]:
        return self.selector.jmespath(query, **kwargs)

    def json(self) -> Any:
        """The body parsed as JSON (as ``.text``: the declared charset is honoured); raises
        ``ValueError`` naming the URL if it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError as exc:
            raise ValueError(f"response from {self.url} is not JSON: {exc}") from None


class HtmlResponse(TextResponse):
    """HTML or XHTML (``text/html``, ``application/xhtml+xml``), always parsed as HTML,
    whatever its prolog: an XHTML page that starts with ``<?xml ...?>`` still finds its
    ``<title>`` and ``<a href>``."""

    __slots__ = ()


class XmlResponse(TextResponse):
    """XML (``text/xml``, ``application/xml``, any ``*+xml``: RSS, Atom, sitemaps), parsed
    as XML: selectors are namespace-aware, as in Scrapy. For an Atom feed call
    ``response.selector.remove_namespaces()`` before ``css("link")``, or use ``xpath``
    with ``register_namespace``; ``follow_all`` follows the ``<a>`` and ``<link>``
    elements (in any namespace) and ``href`` attributes that the selector finds."""

    __slots__ = ()

    _selector_type = "xml"
    _base_xpath = "//*[local-name()='base']/@href"  # XHTML served as XML: in a namespace


class JsonResponse(TextResponse):
    """JSON (``application/json``, ``application/x-json``, ``text/json``, any ``*+json``):
    ``.json()``, and a parsel JSON selector for ``.jmespath()``. Decoded by its BOM, else
    the declared charset, else as UTF-8; ``.css()`` and ``.xpath()`` raise
    ``NotSupported``."""

    __slots__ = ()

    _kind = "JSON"
    _markup = False
    _selector_type = "json"

    def _decode(self) -> None:
        self._encoding, self._text = _json_to_unicode(
            self.headers.get("Content-Type") or "", self.body
        )

    def css(self, query: str) -> SelectorList[Selector]:
        raise self._unsupported(".css()")

    def xpath(self, query: str, **kwargs: Any) -> SelectorList[Selector]:
        raise self._unsupported(".xpath()")


_CLASSES: Final[dict[ResponseKind, type[Response]]] = {
    "html": HtmlResponse,
    "xml": XmlResponse,
    "json": JsonResponse,
    "text": TextResponse,
    "binary": Response,
}

# Kinds with no links to select that follow_all(css=/xpath=) has logged, at most _MAX_TOLD.
_TOLD_NO_LINKS: set[tuple[str, str]] = set()
_MAX_TOLD: Final = 100


def response_for(
    url: str,
    status: int,
    headers: CIMultiDictProxy[str] | Mapping[str, str],
    body: bytes,
    request: Request,
) -> Response:
    """The response of the kind that ``headers``, ``url`` and ``body`` say (see
    ``spiderfarm.responsetypes``): what the fetcher builds for every page."""
    return _CLASSES[response_kind(headers, url, body)](url, status, headers, body, request)


#: Joins and follows by the part of the base URL they depend on and the href (see
#: ``_join_key``); each cache starts over past ``_CACHE_MAX`` entries.
_JOINED: dict[tuple[str, str], str] = {}
_FOLLOWED: dict[tuple[str, str], str] = {}
_CACHE_MAX = 20_000


def _directory(base: str, origin: str) -> str | None:
    """The part of an http(s) base URL that a relative-path join depends on: up to and
    including the last ``/`` of its path (query and fragment dropped). None if the base
    has no path or anything unusual (whitespace, a control character, a backslash)."""
    end = len(base)
    for mark in ("?", "#"):
        at = base.find(mark, len(origin))
        if at != -1:
            end = min(end, at)
    slash = base.rfind("/", len(origin), end)
    if slash == -1 or not base.isascii() or not SAFE_CHARS.issuperset(base):
        return None
    # Interned: every page of a directory shares one string in the join caches' keys.
    return sys.intern(base[: slash + 1])


def _join_key(directory: str, origin: str, href: str) -> tuple[str, str] | None:
    """What ``urljoin(base, href)`` depends on besides ``href``, as a cache key: the
    base's directory for a relative path, its origin for a root-relative one, its scheme
    for an absolute URL or a network path (``//host/...``); None when more of the base
    matters (a query or fragment alone) or the href needs urllib's own reading (leading
    whitespace or control characters, tabs or newlines, which urlsplit removes)."""
    first = href[0]
    if first <= " " or first in "#?" or not _no_tab(href):
        return None
    if first == "/":
        if href[1:2] != "/":
            return (origin, href)
        return (origin[: origin.index(":") + 1], href) if _netloc_follows(href, 0) else None
    colon = href.find(":")
    if colon == -1:
        return (directory, href)
    scheme = href[:colon]
    if not (scheme[:1].isascii() and scheme[:1].isalpha() and _SCHEME_CHARS.issuperset(scheme)):
        return (directory, href)  # "a/b:c": a relative path with a colon in it
    base_scheme = origin[: origin.index(":")]
    if scheme.lower() != base_scheme or _netloc_follows(href, colon + 1):
        return (base_scheme + ":", href)  # urljoin returns it as it is, or normalized
    return None  # "http:path": relative, the old way; rare


#: What may end the part of an href before its fragment for ``_fragment_at``: nothing
#: urljoin or w3lib treats specially at the end (whitespace they strip, an empty query or
#: params they drop).
_STEM_END = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_~.")
_FRAGMENT_SAFE = SAFE_CHARS - {"#"}


def _fragment_at(href: str) -> int:
    """Where the fragment of ``href`` starts (its ``#``) when the URL made of ``href`` is
    the URL made of what comes before plus the fragment as it is: urljoin splits the
    fragment off first and puts it back last, and w3lib leaves a fragment of these
    characters alone. -1 otherwise (no stem, an empty or odd fragment, an odd stem end).
    Pages link to one page at many anchors: the stem's URL is what gets cached."""
    at = href.find("#", 1)
    if at == -1 or href[at - 1] not in _STEM_END:
        return -1
    fragment = href[at + 1 :]
    return at if fragment and _FRAGMENT_SAFE.issuperset(fragment) else -1


def _no_tab(href: str) -> bool:
    """No tab or newline, which urlsplit removes wherever they are."""
    return "\t" not in href and "\n" not in href and "\r" not in href


_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def _netloc_follows(href: str, at: int) -> bool:
    """Whether ``href[at:]`` is ``//`` and a non-empty authority."""
    return href[at : at + 2] == "//" and href[at + 2 : at + 3] not in ("", "/", "?", "#")


def cached_urljoin(base: str, directory: str | None, origin: str | None, href: str) -> str:
    """``urljoin(base, href)``, from a per-process cache when the result depends only on
    the base's ``directory`` or ``origin`` (see ``_join_key``): equal to urljoin's for
    every link (``tests/test_responses.py`` checks the real-world corpus and odd cases)."""
    if directory is None or origin is None or not href:
        return urljoin(base, href)
    hash_at = href.find("#", 1)
    if 0 < hash_at < len(href) - 1 and _no_tab(href):
        # "page.html#section": the join of "page.html" (cached: a site's pages link to
        # the same pages at many anchors) and the fragment as it is, which is what
        # urljoin does with it (split off first, put back last, unless empty).
        return cached_urljoin(base, directory, origin, href[:hash_at]) + href[hash_at:]
    key = _join_key(directory, origin, href)
    if key is None:
        return urljoin(base, href)
    joined = _JOINED.get(key)
    if joined is None:
        if len(_JOINED) > _CACHE_MAX:
            _JOINED.clear()
        joined = _JOINED[key] = urljoin(base, href)
    return joined


def _followable(base: str, href: str) -> str:
    """The URL ``follow_all`` requests for ``href`` on a page of ``base``: joined and made
    safe, or ``""`` for a link it skips (not http(s), or not a valid URL)."""
    try:
        absolute = urljoin(base, href)
        if urlsplit(absolute).scheme not in FETCHABLE_SCHEMES:
            return ""
        return safe_url(absolute)
    except ValueError:
        return ""


_CSS_XPATH: dict[str, str] = {}


def _css_to_xpath(css: str) -> str:
    """The XPath parsel runs for ``css`` on HTML (its own translator, cached)."""
    xpath = _CSS_XPATH.get(css)
    if xpath is None:
        if len(_CSS_XPATH) > 1_000:
            _CSS_XPATH.clear()
        xpath = _CSS_XPATH[css] = HTMLTranslator().css_to_xpath(css)
    return xpath


_COMPILED: dict[tuple[str, tuple[tuple[str, str], ...]], etree.XPath] = {}


def _compiled_css(css: str, namespaces: dict[str, str]) -> etree.XPath:
    """``css`` as parsel translates it, compiled once by lxml (``root.xpath(text)``
    compiles the expression again on every call)."""
    key = (css, tuple(sorted(namespaces.items())))
    compiled = _COMPILED.get(key)
    if compiled is None:
        if len(_COMPILED) > 1_000:
            _COMPILED.clear()
        compiled = _COMPILED[key] = etree.XPath(
            _css_to_xpath(css), namespaces=namespaces, smart_strings=False
        )
    return compiled


_HREFS: dict[tuple[str, tuple[tuple[str, str], ...]], etree.XPath | None] = {}


def _compiled_hrefs(css: str, namespaces: dict[str, str]) -> etree.XPath | None:
    """For a ``css`` whose every match is an ``<a>`` (or every one a ``<link>``): its
    XPath with ``/@href`` added, compiled, which gives the ``href`` of each match in page
    order as strings, with no element object made for lxml to hand over (what follow_all
    reads of them, and a match without an ``href`` is skipped either way). Else None."""
    key = (css, tuple(sorted(namespaces.items())))
    if key in _HREFS:
        return _HREFS[key]
    if len(_HREFS) > 1_000:
        _HREFS.clear()
    compiled = None
    if _subject_tag(css) in ("a", "link"):
        compiled = etree.XPath(
            _css_to_xpath(css) + "/@href", namespaces=namespaces, smart_strings=False
        )
    _HREFS[key] = compiled
    return compiled


def _subject_tag(css: str) -> str | None:
    """The tag name every element ``css`` matches has (lower case, as HTML matching is),
    if the query is one selector whose subject names one; else None (``*``, a group
    ``a, b``, a pseudo-element such as ``::attr(href)``, a query cssselect cannot read)."""
    try:
        selectors = cssselect.parse(css)
    except cssselect.SelectorError:
        return None
    if len(selectors) != 1 or selectors[0].pseudo_element is not None:
        return None
    node: Any = selectors[0].parsed_tree
    while not isinstance(node, cssselect.parser.Element):
        if isinstance(node, cssselect.parser.CombinedSelector):
            node = node.subselector
        elif hasattr(node, "selector"):  # Class, Hash, Attrib, Pseudo, Function, Negation
            node = node.selector
        else:
            return None
    element = node.element
    return element.lower() if isinstance(element, str) and node.namespace is None else None


def _hrefs(nodes: Any) -> Iterator[str]:
    """The links of what an XPath selected: ``href`` of ``<a>``/``<link>``, and strings
    as they are; anything else raises as ``Response.follow`` does for it."""
    for node in nodes:
        if isinstance(node, str):
            yield node
            continue
        tag = node.tag
        if tag in ("a", "link"):
            href = node.get("href")
            if href is not None:
                yield href
        elif isinstance(tag, str):
            raise ValueError(f"only <a> and <link> selectors can be followed, got <{tag}>")


def _trusted_path(href: str, origin_length: int) -> bool:
    """Whether ``origin + href`` is already what ``urljoin`` and ``safe_url`` make of it:
    a root-relative path of safe ASCII with no dot segments."""
    return (
        href[0] == "/"
        and href[1:2] != "/"
        and "/." not in href
        and href.isascii()
        and SAFE_CHARS.issuperset(href)
        and origin_length + len(href) <= MAX_URL_LENGTH
        # urljoin drops an empty query, fragment or last-segment params ("/a?", "/a#",
        # "/a;?b"); such rare links take the slow path.
        and href[-1] not in "?#;"
        and "?#" not in href
        and (";" not in href or (";?" not in href and ";#" not in href))
        and href.count("#") < 2  # w3lib escapes a "#" inside the fragment
    )


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
    if isinstance(tag, str) and tag[:1] == "{":  # "{http://www.w3.org/2005/Atom}link"
        tag = tag.rpartition("}")[2]
    if tag not in ("a", "link"):
        raise ValueError(f"only <a> and <link> selectors can be followed, got <{tag}>")
    href = root.get("href")
    if href is None:
        if missing_ok:  # <a name="top">: nothing to follow
            return ""
        raise ValueError(f"<{tag}> element has no href attribute")
    return str(href)


#: What str.strip() strips from a page's ends and bytes.strip() does not (checked on the
#: first and last bytes bytes.strip() keeps): the C1 and Unicode spaces, and \x1c-\x1f.
_NOT_BYTE_STRIPPED = frozenset(b"\x1c\x1d\x1e\x1f") | frozenset(range(0x80, 0x100))


def _utf8_as_is(content_type: str, body: bytes) -> str | None:
    """The encoding ``_to_unicode`` names for ``body`` if parsel parsing the bytes as
    UTF-8 builds exactly the tree it builds from the decoded text; else None.

    That holds when the text is the bytes decoded as UTF-8 (no BOM; the HTTP charset, else
    the page's declaration, else the default, is UTF-8; no NUL, which ``_decode``
    replaces), and the text's ``strip()`` takes what the bytes' ``strip()`` takes (the
    first and last bytes kept are ASCII other than \\x1c-\\x1f). Invalid UTF-8 is no
    exception: lxml reports it, and parsel then parses the bytes decoded with
    replacement characters, as ``_to_unicode`` decodes them.
    """
    if not body or b"\x00" in body or read_bom(body)[0] is not None:
        return None
    encoding = http_content_type_encoding(content_type)
    if encoding is None:
        encoding = html_body_declared_encoding(body) or "utf8"
    if encoding not in _UTF8_NAMES:
        try:
            if codecs.lookup(encoding).name != "utf-8":
                return None
        except LookupError:
            return None
    first, last = 0, len(body) - 1  # the ends bytes.strip() keeps (not a copy of the page)
    while first <= last and body[first] in _BYTE_SPACE:
        first += 1
    while last > first and body[last] in _BYTE_SPACE:
        last -= 1
    if first <= last and (body[first] in _NOT_BYTE_STRIPPED or body[last] in _NOT_BYTE_STRIPPED):
        return None
    return encoding


_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_BYTE_SPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() strips


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


def _json_to_unicode(content_type: str, body: bytes) -> tuple[str, str]:
    """``(encoding, text)`` of a JSON body: a BOM's encoding, else the HTTP charset (if it
    can decode text), else UTF-8, with replacement characters, never an exception."""
    bom_encoding, bom = read_bom(body)
    if bom_encoding is not None and bom is not None:
        return bom_encoding, body[len(bom) :].decode(bom_encoding, "replace")
    encoding = http_content_type_encoding(content_type)
    if encoding is not None:
        try:
            return encoding, body.decode(encoding, "replace")
        except (LookupError, ValueError):  # base64, rot13, undefined, idna ...
            pass
    return "utf-8", body.decode("utf-8", "replace")
