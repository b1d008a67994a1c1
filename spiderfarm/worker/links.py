"""The links a worker's pages yield, made ready for the frontier.

Each new ``Request`` is deduplicated against what this worker already sent (by its exact
URL first, then by fingerprint: most links on a page were sent before), capped at
``MAX_LINKS_PER_PAGE`` per page, keyed for politeness (cached per scheme and authority;
with ``politeness_key=ip`` looked up off the loop) and checked to pickle, so that one bad
``meta`` costs only its request, never the exchange that would carry it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from multiprocessing.reduction import ForkingPickler

from ..ipkeys import IpKeys
from ..protocol import MAX_LINKS_PER_PAGE, W_URL, Outcome, WireRequest, check_request_fields
from ..request import InvalidRequest, Request, check_meta
from ..settings import Settings
from ..urls import Fingerprinter, authority_of, domain_of, host_allowed, host_of, ip_key_nowait
from .result import PageResult

logger = logging.getLogger("spiderfarm.worker")

__all__ = ["Links"]

#: The per-worker caches (URLs and fingerprints sent, keys by authority) start over past
#: this size: a cache miss only costs the server a duplicate to drop.
CACHE_MAX = 1_000_000


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain_fields(wire: WireRequest) -> bool:
    """Headers, meta and cb_kwargs that are small flat dicts of strings and numbers
    (CrawlSpider's ``{"rule": 0, "link_text": "..."}``): they pickle and pass the
    server's caps, so neither needs trying."""
    size = 0
    for fields in (wire[3], wire[5], wire[8]):
        if fields is None:
            continue
        if type(fields) is not dict or len(fields) > 32:
            return False
        for key, value in fields.items():
            kind = type(value)
            if type(key) is not str or kind not in _SCALARS:
                return False
            size += len(key) + (len(value) if kind is str else 8)
    return size < 65_536


class Links:
    """One worker's sent-set and politeness keys."""

    def __init__(
        self, settings: Settings, spider_name: str = "", allowed_domains: Iterable[str] = ()
    ) -> None:
        self._spider_name = spider_name
        # The spider's allowed_domains, as the frontier reads them: a link off them is
        # dropped here (and counted as the frontier would count it), not sent to be.
        self._allowed = frozenset(d.lower().lstrip(".") for d in allowed_domains)
        self._offsite: dict[str, bool] = {}  # scheme://authority -> off the allowed domains
        self._fingerprinter = Fingerprinter()
        self._sent: dict[int, int] = {}  # fingerprint -> least depth already sent
        self._sent_urls: dict[str, int] = {}  # exact URL -> least depth already sent
        self._keys: dict[str, str] = {}  # scheme://authority -> politeness key
        self._depth_priority = settings.depth_priority
        key = settings.politeness_key
        self._key_of = domain_of if key == "domain" else ip_key_nowait if key == "ip" else host_of
        # politeness_key=ip: "" in _keys marks an authority whose key needs a DNS lookup.
        self._ip_keys = IpKeys(self._keys, settings.connect_timeout_s) if key == "ip" else None

    def add(
        self, value: Request, parent: Request, result: PageResult, depth: int | None = None
    ) -> None:
        """Add ``value`` to ``result.requests`` unless this worker sent it already."""
        depth = parent.depth + 1 if depth is None else depth
        url = value.url
        if self._allowed and self._is_offsite(url):
            result.notes.append("filtered/offsite")
            return
        plain = value.method == "GET" and value.body is None and not value.dont_filter
        sent_urls = self._sent_urls
        if plain:
            # Most links on a page were sent before: drop them by their exact text,
            # before paying for canonicalisation and hashing.
            known = sent_urls.get(url)
            if known is None and "#" in url:  # the fingerprint leaves the fragment out
                known = sent_urls.get(url.partition("#")[0])
            if known is not None and known <= depth and not result.again:
                return
            if len(sent_urls) > CACHE_MAX:
                sent_urls.clear()
        fp = self._fingerprinter.fingerprint(url, value.method, value.body)
        if not value.dont_filter:
            # Drop repeats before they cross the wire; the server dedups for the farm.
            sent = self._sent.get(fp)
            if sent is not None and sent <= depth and not result.again:
                if plain:  # another spelling of a sent URL: next time, drop it sooner
                    sent_urls[url] = depth
                return
        # Only a request that goes out is recorded as sent (and un-recorded if the
        # server refuses the ack that carries it: see forget).
        if len(result.requests) >= MAX_LINKS_PER_PAGE:
            if "too_many_links" not in result.notes:  # the server would refuse the batch
                result.notes.append("too_many_links")
                logger.warning(
                    "%s yields over %d requests: keeping the first %d, and not running "
                    "its callback further", parent.url, MAX_LINKS_PER_PAGE,
                    MAX_LINKS_PER_PAGE,
                )  # fmt: skip
            result.full = True
            return
        if value.meta:  # it may have changed since the Request was made
            try:
                check_meta(value.meta, url)
            except InvalidRequest as exc:
                logger.error("spider %s: dropping a request: %s", self._spider_name, exc)
                result.notes.append("requests/bad_meta")
                return
        value.depth = depth
        if self._depth_priority:
            value.priority -= depth * self._depth_priority
        wire = value.to_wire()
        # Headers, meta and cb_kwargs may hold any object; one that does not pickle
        # would fail the whole exchange, so it is found here, while its URL is known.
        if (value.headers or value.meta or value.cb_kwargs) and not self._pickles(wire, result):
            return
        if not value.dont_filter:
            if len(self._sent) > CACHE_MAX:
                self._sent.clear()
            self._sent[fp] = depth
        if plain:
            sent_urls[url] = depth
        result.requests.append((fp, self.politeness_key(url), wire))

    def _pickles(self, wire: WireRequest, result: PageResult) -> bool:
        if _plain_fields(wire):
            return True
        try:
            check_request_fields(wire)  # the server would refuse the whole exchange
        except ValueError as exc:
            logger.error("spider %s: dropping a request: %s", self._spider_name, exc)
            result.notes.append("requests/bad_fields")
            return False
        try:
            ForkingPickler.dumps(wire)
        except Exception as exc:
            logger.error(
                "spider %s: dropping request %s: its headers, meta or cb_kwargs do not "
                "pickle (%s: %s); requests cross processes, so give them plain data",
                self._spider_name, wire[W_URL], type(exc).__name__, exc,
            )  # fmt: skip
            result.notes.append("requests/unpicklable")
            return False
        return True

    def fingerprint(self, url: str, method: str = "GET", body: bytes | None = None) -> int:
        """The frontier's fingerprint of a request (method, canonical URL, body)."""
        return self._fingerprinter.fingerprint(url, method, body)

    def _is_offsite(self, url: str) -> bool:
        authority = authority_of(url)
        offsite = self._offsite.get(authority)
        if offsite is None:
            if len(self._offsite) > 100_000:
                self._offsite.clear()
            offsite = self._offsite[authority] = not host_allowed(host_of(url), self._allowed)
        return offsite

    def politeness_key(self, url: str) -> str:
        """The key of ``url``'s host, cached by the URL's scheme and authority (a crawl
        has few); with politeness_key=ip, ``""`` until ``fill_keys`` has looked it up."""
        authority = authority_of(url)
        key = self._keys.get(authority)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[authority] = self._key_of(url)
        return key

    async def fill_keys(self, result: PageResult) -> None:
        """With politeness_key=ip, look up the hosts of ``result``'s new requests."""
        if self._ip_keys is not None and result.requests:
            await self._ip_keys.fill(result.requests)

    def forget(self, outcomes: list[Outcome], refused: list[int]) -> None:
        """Un-record the links of outcomes the server never took: when their page is
        fetched again, its links must go out again. (A page fetched again while its first
        outcome is still unanswered sends its links regardless: see ``PageResult.again``.)"""
        lost = set(refused)
        sent, sent_urls = self._sent, self._sent_urls
        for outcome in outcomes:
            if outcome[0] in lost:
                for fp, _, wire in outcome[3]:
                    sent.pop(fp, None)
                    sent_urls.pop(wire[W_URL], None)
