"""``SitemapSpider``: a spider that crawls what sitemaps list (Scrapy's
``scrapy.spiders.SitemapSpider``): sitemaps, sitemap indexes, gzipped sitemaps, and the
``Sitemap:`` lines of robots.txt files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

from ..errors import SettingsError, SpiderLoadError
from ..request import InvalidRequest, Request
from ..response import Response, TextResponse, XmlResponse
from ..settings import Settings
from ..sitemaps import DecompressedTooLarge, Sitemap, gunzip, is_gzip, sitemap_urls_from_robots
from ..spider import Spider

logger = logging.getLogger(__name__)

__all__ = ["SitemapSpider"]


def _regex(value: str | re.Pattern[str]) -> re.Pattern[str]:
    return re.compile(value) if isinstance(value, str) else value


def _iterloc(entries: Iterable[dict[str, Any]], alternate: bool) -> Iterator[str]:
    for entry in entries:
        yield entry["loc"]
        if alternate and "alternate" in entry:
            yield from entry["alternate"]


class SitemapSpider(Spider):
    """Set ``sitemap_urls`` (sitemaps, sitemap indexes, ``.xml.gz`` files, or
    ``robots.txt`` URLs whose ``Sitemap:`` lines are read). A URL a sitemap lists goes to
    the callback of the first ``sitemap_rules`` entry ``(regex, callback)`` whose regex it
    matches (default: every URL to ``parse``); an index's sitemaps are followed when they
    match one of ``sitemap_follow``. ``sitemap_alternate_links`` adds each entry's
    ``<xhtml:link rel="alternate">`` URLs; override ``sitemap_filter(entries)`` to choose
    entries by ``lastmod`` or any other field.

    A gzipped sitemap is decompressed only up to ``response.meta["download_maxsize"]``,
    else the spider's ``download_maxsize`` attribute, else ``max_body_bytes`` from its
    ``custom_settings`` (default 32 MiB); past it the sitemap is ignored with a warning.
    """

    sitemap_urls: ClassVar[Sequence[str]] = ()
    sitemap_rules: ClassVar[Sequence[tuple[re.Pattern[str] | str, Any]]] = [("", "parse")]
    sitemap_follow: ClassVar[Sequence[re.Pattern[str] | str]] = [""]
    sitemap_alternate_links: ClassVar[bool] = False

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        if isinstance(self.sitemap_urls, str):  # -a sitemap_urls=URL,URL
            self.sitemap_urls = [u.strip() for u in self.sitemap_urls.split(",") if u.strip()]  # type: ignore[misc]
        # Callbacks are kept by name: plain data, like the rest of the spider's state.
        self._cbs = [(_regex(r), self._callback_name(c)) for r, c in self.sitemap_rules]
        self._follow = [_regex(x) for x in self.sitemap_follow]
        self._told = False  # _get_sitemap_body said why it gave no body
        try:
            self._max_size = Settings.merge(self.custom_settings).max_body_bytes
        except SettingsError:  # reported, with the details, when the crawl starts
            self._max_size = Settings().max_body_bytes

    def _callback_name(self, callback: Any) -> str:
        if isinstance(callback, str):
            name = callback
            known = callable(getattr(self, name, None))
        else:  # a method of this spider, or the function a method of its class is
            name = getattr(callback, "__name__", "")
            method = getattr(self, name, None)
            known = method is not None and (
                method == callback or getattr(type(self), name, None) is callback
            )
        if known:
            return name
        raise SpiderLoadError(
            f"spider {self.name!r}: sitemap_rules callback {callback!r} is not a method of "
            f"{type(self).__name__}; give a method name (callbacks travel between "
            "processes by name)"
        )

    def start_requests(self) -> Iterable[Request]:
        for url in self.sitemap_urls:
            yield Request(url, callback=self._parse_sitemap)

    def sitemap_filter(self, entries: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """The entries to use (all of them by default): each a dict with ``loc`` and the
        entry's other fields (``lastmod`` ...), and ``alternate`` when it has some."""
        yield from entries

    def _request(self, url: str, callback: str, source: str) -> Request | None:
        try:
            return Request(url, callback=callback)
        except InvalidRequest as exc:
            logger.debug("sitemap %s: skipping %r: %s", source, url, exc)
            return None

    def _parse_sitemap(self, response: Response) -> Iterator[Request]:
        if response.url.endswith("/robots.txt"):
            text = (
                response.text
                if isinstance(response, TextResponse)
                else response.body.decode("utf-8", "replace")
            )
            for url in sitemap_urls_from_robots(text, base_url=response.url):
                if (request := self._request(url, "_parse_sitemap", response.url)) is not None:
                    yield request
            return
        self._told = False
        body = self._get_sitemap_body(response)
        if not body:
            if not self._told:
                logger.warning("Ignoring invalid sitemap: %s", response)
            return
        sitemap = Sitemap(body)
        if sitemap.type == "sitemapindex":
            for loc in _iterloc(self.sitemap_filter(sitemap), self.sitemap_alternate_links):
                if not any(x.search(loc) for x in self._follow):
                    continue
                if (request := self._request(loc, "_parse_sitemap", response.url)) is not None:
                    yield request
        elif sitemap.type == "urlset":
            for loc in _iterloc(self.sitemap_filter(sitemap), self.sitemap_alternate_links):
                for regex, callback in self._cbs:
                    if regex.search(loc):
                        if (request := self._request(loc, callback, response.url)) is not None:
                            yield request
                        break
        else:
            logger.warning("Ignoring invalid sitemap: %s", response)

    def _get_sitemap_body(self, response: Response) -> bytes | None:
        """The sitemap in ``response`` (decompressed if it is gzip), or None if it holds
        none, or decompresses past the cap."""
        body = response.body
        if is_gzip(body):
            max_size = response.meta.get(
                "download_maxsize", getattr(self, "download_maxsize", self._max_size)
            )
            try:
                return gunzip(body, int(max_size))
            except ValueError as exc:  # DecompressedTooLarge, or not readable gzip
                what = " (download_maxsize)" if isinstance(exc, DecompressedTooLarge) else ""
                logger.warning("Ignoring invalid sitemap: %s: %s%s", response, exc, what)
                self._told = True
                return None
        if isinstance(response, XmlResponse):
            return body
        # A .xml.gz body that is not gzip was decompressed on the way (Content-Encoding).
        if response.url.endswith((".xml", ".xml.gz")):
            return body
        return None
