"""One lease, start to end: ``PageRunner.process(lease) -> Outcome``.

Downloader middlewares, the fetch, the status check (retry codes, ``Retry-After``,
``handle_httpstatus_list``), the callback or, on the final failure, the errback, the item
pipelines and the items' encoding. Scrapy's per-request ``meta`` controls (``dont_retry``,
``max_retry_times``, ``handle_httpstatus_list``/``_all``) and HTTP basic auth
(``http_user``/``http_pass``/``http_auth_domain``) are applied here; the fetcher applies
the redirect, timeout and cookie ones. A ``PageRunner`` needs a spider, settings, a fetcher
and a ``Links``; no server (tests and ``benchmarks/page_bench.py`` build one directly).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

from w3lib.http import basic_auth_header

from ..errors import CloseSpider, DropItem, FetchError, IgnoreRequest
from ..fetch import retry_after_s
from ..heartbeat import STALL_S, LoopWatch
from ..items import encode_item
from ..middleware import Middlewares, Pipelines
from ..politeness import ROBOTS_CALLBACK, ROBOTS_MAX_BYTES
from ..protocol import (
    MAX_ITEM_BYTES,
    NO_INFO,
    RETRYABLE_REASONS,
    Info,
    Kind,
    Lease,
    Outcome,
    join_notes,
    retries_allowed,
    with_errback_notes,
)
from ..request import InvalidRequest, Request, check_meta, current_spider
from ..response import Response
from ..settings import Settings
from ..spider import Spider
from ..urls import host_allowed, host_of
from .links import Links
from .result import PageResult, is_single

logger = logging.getLogger("spiderfarm.worker")

__all__ = ["Fetches", "PageRunner"]

# A CloseSpider reason is user text; the server refuses a reason over 200 characters.
_MAX_CLOSE_REASON = 100
_NO_LEASES: Mapping[str, int] = {}
_UNSET: Final = object()
# How a redirect changes the method (aiohttp's rule, which Scrapy's matches): 303 makes a
# GET of anything but HEAD, 301 and 302 make a GET of a POST; the body goes with it.
_TO_GET: Final = frozenset({301, 302})


def _final_method(method: str, reasons: list[int]) -> str:
    for status in reasons:
        if (status == 303 and method != "HEAD") or (status in _TO_GET and method == "POST"):
            method = "GET"
    return method


def auth_domain(spider: Spider, first_url: str) -> str | None:
    """The host HTTP basic auth credentials go to: ``spider.http_auth_domain`` (None: every
    host), else the host of the crawl's first request (Scrapy's rule)."""
    domain = getattr(spider, "http_auth_domain", _UNSET)
    if domain is _UNSET:
        return host_of(first_url).rpartition(":")[0] or host_of(first_url)
    return str(domain).lower() if domain else None


class Fetches(Protocol):
    """What a page runner fetches with: ``fetch.Fetcher``, or anything that answers."""

    async def fetch(self, request: Request) -> Response: ...


class PageRunner:
    """Turns leases into outcomes for one spider."""

    def __init__(
        self,
        spider: Spider,
        settings: Settings,
        fetcher: Fetches | None,
        links: Links,
        *,
        middlewares: Middlewares | None = None,
        pipelines: Pipelines | None = None,
        watch: LoopWatch | None = None,
        leased: Mapping[str, int] = _NO_LEASES,
    ) -> None:
        self.spider, self.settings, self.fetcher, self.links = spider, settings, fetcher, links
        self._middlewares, self._pipelines = middlewares, pipelines
        self._watch = watch or LoopWatch()
        # URL -> leases of it this worker holds (two when an expired lease's page came back).
        self._leased = leased
        self._handle_status = set(settings.handle_httpstatus_list) | set(
            getattr(spider, "handle_httpstatus_list", ())
        )
        self._retry_codes = frozenset(settings.retry_http_codes)
        self.pages = 0  # responses that reached the status check
        user, password = getattr(spider, "http_user", ""), getattr(spider, "http_pass", "")
        self._auth = basic_auth_header(user, password).decode() if user or password else None
        self._auth_domain: Any = _UNSET  # decided by the first request, unless set
        self.stats = spider.stats  # the spider's own counters (spider.stats)

    def _authorize(self, request: Request) -> None:
        """HTTP basic auth, as Scrapy's HttpAuthMiddleware: only to ``http_auth_domain``
        (and its subdomains), never over a request's own Authorization header."""
        if self._auth_domain is _UNSET:
            self._auth_domain = auth_domain(self.spider, request.url)
        domain = self._auth_domain
        headers = request.headers
        if headers and any(k.lower() == "authorization" for k in headers):
            return
        if domain is not None:
            host = host_of(request.url)
            host = host.rpartition(":")[0] if host.count(":") == 1 else host
            if not host_allowed(host, frozenset((domain,))):
                return
        request.headers = {**(headers or {}), "Authorization": self._auth or ""}

    async def process(self, lease: Lease) -> Outcome:
        """The outcome of one lease, whatever happened to it (never raises for a bad
        page, URL, middleware or callback: each is a counted reason)."""
        lease_id, attempt, wire = lease
        request = Request.from_wire(wire)
        if request.callback == ROBOTS_CALLBACK:
            return await self._fetch_robots(lease_id, request)
        meta = request.meta
        if meta:
            try:
                check_meta(meta, request.url)
            except InvalidRequest as exc:  # set after the request was made: fail it alone
                logger.error("spider %s: %s", self.spider.name, exc)
                error = FetchError(request.url, "bad_request", str(exc)[:300])
                return await self._failed(request, lease_id, attempt, error, False, NO_INFO)
        started = time.monotonic()
        mw = self._middlewares
        response: Response | Request | None = None
        try:
            if mw is not None:
                response = await mw.request(request)
            if response is None:
                try:
                    response = await self._fetch(request)
                except FetchError as exc:
                    if mw is not None:
                        response = await mw.exception(request, exc)
                    if response is None:
                        latency = time.monotonic() - started
                        retry = exc.reason in RETRYABLE_REASONS
                        logger.debug("fetch failed: %s", exc)
                        info = (0, latency, 0.0)
                        return await self._failed(request, lease_id, attempt, exc, retry, info)
            if mw is not None and isinstance(response, Response):
                response = await mw.response(request, response)
        except IgnoreRequest:
            return (lease_id, "skip", "filtered/ignored", [], [], NO_INFO)
        except Exception:
            logger.exception("downloader middleware failed on %s", request.url)
            return (lease_id, "fail", "middleware_error", [], [], NO_INFO)
        latency = time.monotonic() - started
        if isinstance(response, Request):  # a middleware asked for another request instead
            result = PageResult()
            self.links.add(response, request, result, depth=request.depth)
            await self.links.fill_keys(result)
            notes = join_notes(["requests/rescheduled", *result.notes])
            return (lease_id, "skip", notes, result.requests, [], NO_INFO)
        self.pages += 1
        status = response.status
        meta = request.meta
        if (
            not 200 <= status < 300
            and status not in self._handle_status
            and not (
                meta
                and (
                    meta.get("handle_httpstatus_all")
                    or status in (meta.get("handle_httpstatus_list") or ())
                )
            )
        ):
            retry = status in self._retry_codes
            wait = retry_after_s(response.headers.get("Retry-After")) if retry else 0.0
            error = FetchError(request.url, f"http_{status}")
            return await self._failed(
                request, lease_id, attempt, error, retry, (status, latency, wait)
            )
        result = await self.run_callback(
            request, response, request.callback or "parse", request.cb_kwargs
        )
        kind: Kind = "close" if result.close_reason else "ok"
        reason = result.close_reason or join_notes(result.notes)
        page_info: Info = (status, latency, 0.0)
        if (
            meta
            and "redirect_reasons" in meta
            and response.url != request.url
            and not request.dont_filter
        ):
            # Where the redirects ended is deduplicated like a request (Scrapy schedules
            # a redirect as a new request): the frontier drops this page if it is seen.
            method = _final_method(request.method, meta["redirect_reasons"])
            body = request.body if method == request.method else None
            final = self.links.fingerprint(response.url, method, body)
            if final != self.links.fingerprint(request.url, request.method, request.body):
                page_info = (status, latency, 0.0, final)
        return (lease_id, kind, reason, result.requests, result.items, page_info)

    def add_stats(self, outcome: Outcome) -> Outcome:
        """``outcome`` carrying the spider stats noted since the last one (call it when
        ``stats.pending``). A close, robots.txt or handed-back outcome carries none: they
        wait for the next page's."""
        kind, reason = outcome[1], outcome[2]
        if kind in ("ok", "skip"):
            notes = self.stats.take_notes()
            reason = f"{reason},{notes}" if reason else notes
        elif kind in ("fail", "retry"):
            notes = self.stats.take_notes()
            reason = f"{reason},{notes}" if "|" in reason else f"{reason}|{notes}"
        else:
            return outcome
        return (outcome[0], kind, reason, outcome[3], outcome[4], outcome[5])

    async def _fetch(self, request: Request) -> Response:
        if self.fetcher is None:
            raise RuntimeError("this PageRunner has no fetcher: it can run callbacks only")
        if self._auth is not None:
            self._authorize(request)
        return await self.fetcher.fetch(request)

    async def _fetch_robots(self, lease_id: int, request: Request) -> Outcome:
        """robots.txt for the frontier (RFC 9309): 2xx is parsed there, 4xx allows all,
        5xx or no answer allows nothing until a retry succeeds."""
        started = time.monotonic()
        try:
            # Middlewares see it too (a proxy-only farm must fetch robots.txt the same way).
            early = await self._middlewares.request(request) if self._middlewares else None
            if isinstance(early, Response):
                response = early
            else:
                response = await self._fetch(request)
        except (FetchError, IgnoreRequest) as exc:
            logger.info("robots.txt unavailable: %s", exc)
            return (lease_id, "robots", "unavailable", [], [], (0, time.monotonic() - started, 0.0))
        except Exception:
            logger.exception("downloader middleware failed on %s", request.url)
            return (lease_id, "robots", "unavailable", [], [], (0, time.monotonic() - started, 0.0))
        info = (response.status, time.monotonic() - started, 0.0)
        if 200 <= response.status < 300:
            text = response.body[:ROBOTS_MAX_BYTES].decode("utf-8", "replace")
            return (lease_id, "robots", "ok", [], [text], info)
        if 400 <= response.status < 500:
            return (lease_id, "robots", "missing", [], [], info)
        return (lease_id, "robots", "unavailable", [], [], info)

    async def _failed(
        self,
        request: Request,
        lease_id: int,
        attempt: int,
        exc: FetchError,
        retry: bool,
        info: Info,
    ) -> Outcome:
        # dont_retry, max_retry_times: the frontier reads them too, and dead-letters a
        # "retry" past them, as it does one past max_retries.
        allowed = retries_allowed(request.meta, self.settings.max_retries)
        kind: Kind = "retry" if retry else "fail"
        if request.errback and (not retry or attempt >= allowed):
            # The errback sees the final failure only (Scrapy's ``errback(failure)``, with
            # ``failure.request``); its output is acked with it. The kind stays "retry" so
            # that the frontier dead-letters a request that ran out of retries.
            exc.request = request  # type: ignore[attr-defined]
            result = await self.run_callback(request, exc, request.errback, None)
            # The errback's own counters (callback_error, bad_item ...) ride after the reason.
            reason = with_errback_notes(exc.reason, result.notes)
            return (lease_id, kind, reason, result.requests, result.items, info)
        return (lease_id, kind, exc.reason, [], [], info)

    async def run_callback(
        self,
        request: Request,
        arg: Response | FetchError,
        name: str,
        kwargs: dict[str, Any] | None = None,
    ) -> PageResult:
        """Run callback (or errback) ``name`` on ``arg``; what it yields, collected."""
        result = PageResult(self._leased.get(request.url, 0) > 1)
        token = current_spider.set(self.spider)
        running = self._watch.running
        running[name] += 1
        try:
            callback = getattr(self.spider, name)
            output = callback(arg, **kwargs) if kwargs else callback(arg)
            if inspect.isasyncgen(output):
                async for value in output:
                    self._collect(value, request, result)
                    if result.full:
                        await output.aclose()
                        break
            else:
                if inspect.isawaitable(output):
                    output = await output
                if not inspect.isgenerator(output) and is_single(output):
                    self._collect(output, request, result)
                else:
                    for value in output:
                        self._collect(value, request, result)
                        if result.full:
                            break  # a generator is closed when it is dropped
        except CloseSpider as exc:
            result.close_reason = str(exc.reason or "close_spider")[:_MAX_CLOSE_REASON]
        except IgnoreRequest:
            pass
        except Exception:
            logger.exception(
                "spider %s: callback %s failed on %s", self.spider.name, name, request.url
            )
            result.notes.append("callback_error")
        finally:
            current_spider.reset(token)
            running[name] -= 1
            if not running[name]:
                del running[name]
            # The loop has not ticked for a while and this callback was running all along:
            # it is what held the loop (one step of one coroutine runs at a time).
            if (lag := self._watch.lag_s()) > STALL_S:
                self._watch.blocked([name], lag)
        if result.raw:
            await self._run_pipelines(result, request)
        await self.links.fill_keys(result)
        return result

    def _collect(self, value: Any, parent: Request, result: PageResult) -> None:
        if value is None:
            return
        if isinstance(value, Request):
            self.links.add(value, parent, result)
        elif self._pipelines is not None:
            result.raw.append(value)
        else:
            self._encode(value, parent, result)

    async def _run_pipelines(self, result: PageResult, request: Request) -> None:
        assert self._pipelines is not None
        for item in result.raw:
            try:
                item = await self._pipelines.process(item)
            except DropItem as exc:
                logger.debug("item dropped on %s: %s", request.url, exc)
                result.notes.append("items/dropped")
                continue
            except Exception:
                logger.exception("item pipeline failed on an item from %s", request.url)
                result.notes.append("pipeline_error")
                continue
            self._encode(item, request, result)
        result.raw = []

    def _encode(self, item: Any, parent: Request, result: PageResult) -> None:
        try:
            line = encode_item(item)
            size = len(line) if line.isascii() else len(line.encode())
            if size > MAX_ITEM_BYTES:
                raise ValueError(f"item is {size} bytes, over the {MAX_ITEM_BYTES} cap")
            result.items.append(line)
        except (TypeError, ValueError) as exc:
            logger.error(
                "spider %s: dropping an item from %s: %s", self.spider.name, parent.url, exc
            )
            result.notes.append("bad_item")
