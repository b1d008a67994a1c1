"""``LinkExtractor``: the links of a page that pass a set of filters, as ``Link`` objects
(Scrapy's ``scrapy.linkextractors.LinkExtractor``, its arguments, defaults and order).

It reads the lxml tree the response's selector already parsed, so an HTML page is parsed
once for the callback's selectors and the extractor together.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias
from urllib.parse import urljoin, urlsplit

from lxml import etree
from parsel.csstranslator import HTMLTranslator
from w3lib.html import HTML5_WHITESPACE as _HTML5_WHITESPACE
from w3lib.url import canonicalize_url, safe_url_string

from .link import Link
from .response import JsonResponse, Response, TextResponse, _fragment_at, _join_key
from .urls import FETCHABLE_SCHEMES, MAX_URL_LENGTH, SAFE_CHARS, in_safe_form, safe_url

logger = logging.getLogger(__name__)

__all__ = ["IGNORED_EXTENSIONS", "LinkExtractor"]

#: Extensions whose links are not extracted unless ``deny_extensions`` says otherwise
#: (Scrapy 2.19's list, without the dot).
IGNORED_EXTENSIONS = [
    # archives
    "7z", "7zip", "bz2", "rar", "tar", "tar.gz", "xz", "zip",
    # images
    "mng", "pct", "bmp", "gif", "jpg", "jpeg", "png", "pst", "psp", "tif", "tiff", "ai",
    "drw", "dxf", "eps", "ps", "svg", "cdr", "ico", "webp",
    # audio
    "mp3", "wma", "ogg", "wav", "ra", "aac", "mid", "au", "aiff",
    # video
    "3gp", "asf", "asx", "avi", "mov", "mp4", "mpg", "qt", "rm", "swf", "wmv", "m4a",
    "m4v", "flv", "webm",
    # office suites
    "xls", "xlsm", "xlsx", "xltm", "xltx", "potm", "potx", "ppt", "pptm", "pptx", "pps",
    "doc", "docb", "docm", "docx", "dotm", "dotx", "odt", "ods", "odg", "odp",
    # other
    "css", "pdf", "exe", "bin", "rss", "dmg", "iso", "apk", "jar", "sh", "rb", "js",
    "hta", "bat", "cpl", "msi", "msp", "py",
]  # fmt: skip

_XHTML_NAMESPACE = "{http://www.w3.org/1999/xhtml}"


def _text_of(el: Any) -> str:
    """The XPath string value of ``el`` (its text nodes, comments and processing
    instructions left out), as libxml2 gathers it for a text serialisation: the same
    string for half the cost of evaluating ``string()``."""
    return str(etree.tostring(el, method="text", encoding="unicode", with_tail=False))


_css_translator = HTMLTranslator()

_Regex: TypeAlias = str | re.Pattern[str]
_RegexOrSeveral: TypeAlias = _Regex | Iterable[_Regex]


def _to_list(value: Any) -> list[Any]:
    """One value or several as a list (Scrapy's ``arg_to_iter``): ``None`` is none, a
    string or a compiled pattern is one."""
    if value is None:
        return []
    if isinstance(value, str | bytes | dict | re.Pattern) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _regexes(value: _RegexOrSeveral | None) -> list[re.Pattern[str]]:
    return [x if isinstance(x, re.Pattern) else re.compile(x) for x in _to_list(value)]


def _local_name(tag: Any) -> Any:
    """An element's tag without the XHTML namespace (other namespaces are kept)."""
    if isinstance(tag, str) and tag.startswith(_XHTML_NAMESPACE):
        return tag[len(_XHTML_NAMESPACE) :]
    return tag


def _name_matches(allowed: set[str], denied: set[str], name: str) -> bool:
    return name not in denied and ("*" in allowed or name in allowed)


def _has_nofollow(rel: str | None) -> bool:
    return rel is not None and "nofollow" in rel.lower().replace(",", " ").split()


def _from_any_domain(url: str, domains: set[str]) -> bool:
    """Whether ``url``'s host is one of ``domains`` or a subdomain of one. The host is
    compared without its port (as spiderfarm's ``allowed_domains`` is), and with it, so a
    domain written ``example.com:8080`` (which Scrapy's netloc test needs) still matches."""
    parts = urlsplit(url)
    names = {parts.hostname or "", parts.netloc.lower()} - {""}
    return any(n == d or n.endswith("." + d) for n in names for d in domains)


def _has_extension(path: str, extensions: set[str], plain: bool) -> bool:
    """Whether ``path`` ends with one of ``extensions`` (each starting with a dot), as
    ``any(path.endswith(e) ...)`` says, in a set lookup per dot of the last segment when
    no extension holds a slash (``plain``)."""
    if not plain:
        return any(path.endswith(ext) for ext in extensions)
    at = path.rfind("/") + 1
    while (at := path.find(".", at)) != -1:
        if path[at:] in extensions:
            return True
        at += 1
    return False


def _settled(url: str) -> bool:
    """Whether ``url`` is what w3lib's safe_url_string and then urljoin with an http(s)
    page make of it: in the form safe_url_string leaves alone (``urls.in_safe_form``),
    with a path and no dot segment (which urljoin would resolve)."""
    return url.find("/", url.find("//") + 2) != -1 and "/." not in url and in_safe_form(url)


def _path_of(url: str) -> str:
    """``urlsplit(url).path`` of an http(s) URL that passed ``safe_url``."""
    start = url.find("/", url.find("//") + 2)
    if start == -1:
        return ""
    end = len(url)
    for mark in ("?", "#"):
        at = url.find(mark, start)
        if at != -1:
            end = min(end, at)
    return url[start:end]


#: Each extractor's URLs, by what they depend on; started over past this many.
_CACHE_MAX = 20_000


def _unique(links: list[Link]) -> list[Link]:
    seen: set[str] = set()
    kept = []
    for link in links:
        if link.url not in seen:
            seen.add(link.url)
            kept.append(link)
    return kept


class LinkExtractor:
    """Finds the links of a response that pass its filters (Scrapy's arguments):

    ``allow``/``deny``: regular expressions the absolute URL must match / must not match
    (``deny`` wins); ``allow_domains``/``deny_domains``: hosts (and their subdomains);
    ``restrict_xpaths``/``restrict_css``: only links inside these regions;
    ``restrict_text``: expressions the link's text must match; ``tags``/``attrs``
    (default ``a``, ``area`` and ``href``; ``"*"`` for any) and ``deny_tags``/
    ``deny_attrs``; ``canonicalize``: w3lib's canonical URL (off by default, as the URL
    sent should be the page's); ``unique``: drop repeated URLs; ``process_value``: a
    function from the raw attribute value to the URL to use, or ``None`` to skip it;
    ``deny_extensions``: defaults to ``IGNORED_EXTENSIONS``; ``strip``: strip HTML
    whitespace around attribute values.

    Only http and https links are returned (Scrapy also returns ``file:`` and ``ftp:``),
    and none the farm would refuse to fetch (over 2,083 characters, a bad port or host):
    every URL returned is one ``safe_url`` leaves as it is.
    """

    def __init__(
        self,
        allow: _RegexOrSeveral = (),
        deny: _RegexOrSeveral = (),
        allow_domains: str | Iterable[str] = (),
        deny_domains: str | Iterable[str] = (),
        restrict_xpaths: str | Iterable[str] = (),
        tags: str | Iterable[str] | None = ("a", "area"),
        attrs: str | Iterable[str] | None = ("href",),
        canonicalize: bool = False,
        unique: bool = True,
        process_value: Callable[[Any], Any] | None = None,
        deny_extensions: str | Iterable[str] | None = None,
        restrict_css: str | Iterable[str] = (),
        strip: bool = True,
        restrict_text: _RegexOrSeveral | None = None,
        deny_tags: str | Iterable[str] = (),
        deny_attrs: str | Iterable[str] = (),
    ) -> None:
        self._tags, self._deny_tags = set(_to_list(tags)), set(_to_list(deny_tags))
        self._attrs, self._deny_attrs = set(_to_list(attrs)), set(_to_list(deny_attrs))
        self.allow_res = _regexes(allow)
        self.deny_res = _regexes(deny)
        self.allow_domains = {d.lower() for d in _to_list(allow_domains)}
        self.deny_domains = {d.lower() for d in _to_list(deny_domains)}
        self.restrict_xpaths: tuple[str, ...] = (
            *_to_list(restrict_xpaths),
            *(_css_translator.css_to_xpath(css) for css in _to_list(restrict_css)),
        )
        self.canonicalize = canonicalize
        self.unique = unique
        self.process_value = process_value
        if deny_extensions is None:
            deny_extensions = IGNORED_EXTENSIONS
        self.deny_extensions = {"." + e for e in _to_list(deny_extensions)}
        self.strip = strip
        self.restrict_text = _regexes(restrict_text)
        # The tags to look at, for lxml to find (not every element of the page), unless
        # any tag will do.
        self._iter_tags: tuple[str, ...] = (
            () if "*" in self._tags
            else (*self._tags, *(_XHTML_NAMESPACE + tag for tag in self._tags))
        )  # fmt: skip
        self._plain_extensions = not any("/" in e for e in self.deny_extensions)
        # The one attribute to read (Scrapy's default: href), if only one may be.
        self._single_attr: str | None = (
            next(iter(self._attrs))
            if len(self._attrs) == 1 and not self._attrs & {"*", *self._deny_attrs}
            else None
        )
        # Raw attribute value (by what its join depends on) -> the URL it gives, or "" for
        # one filtered out by the URL filters; only without process_value, which may be
        # anything. Spiders reuse one extractor for every page of a crawl.
        self._urls: dict[tuple[str, str, str], str] = {}

    def extract_links(self, response: Response) -> list[Link]:
        """The links of ``response`` that pass the filters, in page order (each URL once
        when ``unique``). A response with no markup (binary, JSON) has none."""
        if not isinstance(response, TextResponse) or isinstance(response, JsonResponse):
            return []
        base_url = response.base_url
        if self.restrict_xpaths:
            docs = [sub for xpath in self.restrict_xpaths for sub in response.xpath(xpath)]
        else:
            docs = [response.selector]
        found: list[Link] = []
        for doc in docs:
            if not isinstance(doc.root, etree._Element):  # a text or attribute result
                continue
            links = self._links_in(doc.root, response, base_url)
            found.extend(self._process_links(links))
        return _unique(found) if self.unique else found

    def matches(self, url: str) -> bool:
        """Whether ``url`` passes the domain and ``allow``/``deny`` filters."""
        if self.allow_domains and not _from_any_domain(url, self.allow_domains):
            return False
        if self.deny_domains and _from_any_domain(url, self.deny_domains):
            return False
        allowed = any(r.search(url) for r in self.allow_res) if self.allow_res else True
        return allowed and not any(r.search(url) for r in self.deny_res)

    def _values(self, root: Any) -> Iterator[tuple[Any, str]]:
        """``(element, raw value)`` of each attribute under ``root`` that the tag and
        attribute filters let through, in page order."""
        elements = root.iter(*self._iter_tags) if self._iter_tags else root.iter(etree.Element)
        tags, deny_tags = self._tags, self._deny_tags
        attrs, deny_attrs = self._attrs, self._deny_attrs
        # lxml has found only the tags asked for: nothing to check unless some are denied.
        check_tag = not self._iter_tags or bool(deny_tags)
        single = self._single_attr
        for el in elements:
            if check_tag and not _name_matches(tags, deny_tags, _local_name(el.tag)):
                continue
            if single is not None:  # the one attribute (href): no walk over the others
                only = el.get(single)
                if only is not None:
                    yield el, only
                continue
            for name, value in el.attrib.items():
                if _name_matches(attrs, deny_attrs, name):
                    yield el, value

    def _links_in(self, root: Any, response: TextResponse, base_url: str) -> list[Link]:
        """The links under ``root`` whose URL passes every URL filter (``restrict_text``
        is left for ``_process_links``), each URL once when ``unique``."""
        page_url, encoding = response.url, response.encoding
        # Cached only where the result depends on the href and the page's directory (no
        # <base href> elsewhere, no process_value); see response._join_key.
        cacheable = self.process_value is None and base_url == page_url
        directory, origin = response._base_dir, response._base_origin
        if directory is None or origin is None:
            cacheable = False
        fragments = cacheable and not (self.allow_res or self.deny_res)
        own: str | None = None  # the page's own URL for its "#fragment" links, once asked
        cache, strip, unique = self._urls, self.strip, self.unique
        seen: set[str] = set()
        found: list[tuple[str, Any]] = []
        for el, raw in self._values(root):
            value = raw.strip(_HTML5_WHITESPACE) if strip else raw
            if cacheable and value:
                if fragments and value[0] == "#":
                    # A link to a fragment of the page itself (Sphinx and javadoc pages
                    # hold hundreds): the page's own URL passed the filters once, and a
                    # fragment of safe characters changes nothing they test but length.
                    fragment = value[1:]
                    if (
                        fragment
                        and fragment.isascii()
                        and SAFE_CHARS.issuperset(fragment)
                        and "#" not in fragment  # which w3lib escapes
                    ):
                        if own is None:
                            own = self._own_url(response)
                        url = own + value if own else ""
                        if url and len(url) <= MAX_URL_LENGTH and not (unique and url in seen):
                            seen.add(url)
                            found.append((url, el))
                        continue
                fragment = ""
                join = None
                if fragments and (at := _fragment_at(value)) != -1:
                    # "page.html#section": the URL of "page.html" (cached once, not once
                    # per anchor) and the fragment, which no filter here tests.
                    join = _join_key(directory, origin, value[:at])  # type: ignore[arg-type]
                    if join is not None:
                        value, fragment = value[:at], value[at:]
                if join is None:
                    join = _join_key(directory, origin, value)  # type: ignore[arg-type]
                if join is not None:
                    key = (join[0], value, encoding)
                    cached = cache.get(key)
                    if cached is None:
                        cached = self._url(value, response, page_url, encoding)
                        if len(cache) > _CACHE_MAX:
                            cache.clear()
                        cache[key] = cached
                    if cached and fragment:
                        cached += fragment
                        if len(cached) > MAX_URL_LENGTH:
                            continue
                    if cached and not (unique and cached in seen):
                        seen.add(cached)
                        found.append((cached, el))
                    continue
            url = self._url(value, response, page_url, encoding)
            if url and not (unique and url in seen):
                seen.add(url)
                found.append((url, el))
        return [Link(url, _text_of(el), nofollow=_has_nofollow(el.get("rel"))) for url, el in found]

    def _url(self, value: str, response: TextResponse, page_url: str, encoding: str) -> str:
        """The URL an attribute value gives, or ``""`` if it gives none that passes the
        URL filters: joined, ``process_value``, made safe (w3lib, the page's encoding)
        and joined again, as Scrapy does."""
        try:
            url = response.urljoin(value)
        except ValueError:
            return ""  # a value urljoin cannot parse (a broken IPv6 literal ...)
        if self.process_value is not None:
            url = self.process_value(url)
            if url is None:
                return ""
        settled = _settled(url)
        if not settled:
            try:
                url = urljoin(page_url, safe_url_string(url, encoding=encoding))
            except ValueError:
                logger.debug("skipping the link %r on %s: not a usable URL", url, page_url)
                return ""
        # A settled URL on the page's own (validated) origin passes safe_url if it is
        # short enough: scheme, host and port are the page's.
        origin = response._base_origin
        known = (
            settled
            and origin is not None
            and url.startswith(origin)
            and url[len(origin) : len(origin) + 1] == "/"
            and len(url) <= MAX_URL_LENGTH
        )
        return url if self._url_allowed(url, known) else ""

    def _own_url(self, response: TextResponse) -> str:
        """The page's own URL as its fragment links join to it, if it passes the URL
        filters (else ``""``), from the extractor's cache."""
        key = ("#", response.url, "")
        own = self._urls.get(key)
        if own is None:
            page = response.urljoin("#x")[:-2]
            own = self._urls[key] = (
                page if self._url(page, response, response.url, response.encoding) == page
                else ""
            )  # fmt: skip
        return own

    def _url_allowed(self, url: str, fetchable: bool = False) -> bool:
        """The filters on the URL alone: http(s), fetchable (known already when
        ``fetchable``), ``allow``/``deny``, the domains and ``deny_extensions``."""
        if not fetchable:
            if url.partition("://")[0] not in FETCHABLE_SCHEMES:
                return False
            try:
                safe_url(url)
            except ValueError:  # over the URL length cap, a bad port or host name
                return False
        if self.allow_res and not any(r.search(url) for r in self.allow_res):
            return False
        if self.deny_res and any(r.search(url) for r in self.deny_res):
            return False
        if self.allow_domains and not _from_any_domain(url, self.allow_domains):
            return False
        if self.deny_domains and _from_any_domain(url, self.deny_domains):
            return False
        if self.deny_extensions:
            path = _path_of(url).lower()
            if _has_extension(path, self.deny_extensions, self._plain_extensions):
                return False
        return True

    def _process_links(self, links: list[Link]) -> list[Link]:
        if self.restrict_text:
            links = [link for link in links if any(r.search(link.text) for r in self.restrict_text)]
        if self.canonicalize:
            for link in links:
                link.url = canonicalize_url(link.url)
        return _unique(links) if self.unique else links

    def __repr__(self) -> str:
        return f"<LinkExtractor allow={[r.pattern for r in self.allow_res]!r}>"
