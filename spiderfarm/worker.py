"""The worker: lease -> fetch -> callbacks -> ack, under bounded concurrency.

One pump task talks to the server (one ``exchange`` round trip acks finished requests
and leases new ones); ``concurrency`` slot tasks fetch and run callbacks. A prefetch
buffer keeps the slots fed while a round trip is in flight. SIGINT/SIGTERM drain: stop
leasing, hand back what has not started, finish or abandon in-flight work within a
grace period, ack, say goodbye, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Mapping
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from .client import FrontierClient
from .errors import (
    CloseSpider,
    ConnectError,
    DropItem,
    FetchError,
    IgnoreRequest,
    SpiderfarmError,
)
from .fetch import Fetcher, retry_after_s
from .frontier import CLOSING, FINISHED
from .heartbeat import STALL_S, Heartbeat, LoopWatch
from .http import Request, Response, current_spider
from .ipkeys import IpKeys
from .items import encode_item
from .middleware import Middlewares, Pipelines, load_components
from .politeness import ROBOTS_CALLBACK, ROBOTS_MAX_BYTES
from .protocol import (
    NO_INFO,
    RETRYABLE_REASONS,
    W_URL,
    Kind,
    Lease,
    Outcome,
    PushEntry,
    WireRequest,
    join_notes,
    with_errback_notes,
)
from .security import MAX_BATCH, MAX_ITEM_BYTES, MAX_LINKS_PER_PAGE
from .settings import Settings
from .spider import Spider, load_spider
from .start import apply_spider_state
from .urls import (
    Fingerprinter,
    domain_of,
    host_of,
    ip_key_nowait,
)

logger = logging.getLogger(__name__)

__all__ = ["Worker"]

# A CloseSpider reason is user text; the server refuses a reason over 200 characters.
_MAX_CLOSE_REASON = 100


def _single(output: Any) -> bool:
    """Whether a callback's return value is one value (an item or a Request), not many."""
    return (
        output is None
        or isinstance(output, dict | Request | Mapping)
        or (dataclasses.is_dataclass(output) and not isinstance(output, type))
    )


class _CallbackResult:
    __slots__ = ("again", "close_reason", "full", "items", "notes", "raw", "requests")

    def __init__(self, again: bool = False) -> None:
        # A page leased again while its earlier lease (expired) is still unanswered: the
        # links that lease recorded as sent may yet be refused, so send them again.
        self.again = again
        self.items: list[str] = []
        self.raw: list[Any] = []  # items waiting for the pipelines
        self.requests: list[PushEntry] = []
        # Counter names for the frontier's stats: "callback_error" counts as
        # errors/callback_error, a name with a slash ("items/dropped") as it is.
        self.notes: list[str] = []
        self.close_reason = ""
        # The page reached MAX_LINKS_PER_PAGE: the callback is not run further (a page of a
        # million links must not hold the loop for half a minute making Requests).
        self.full = False


class Worker:
    """Crawls for one server until it says the crawl is finished."""

    def __init__(
        self,
        client: FrontierClient,
        spiders_dir: Path | str = "spiders",
        concurrency: int | None = None,
        grace_s: float = 10.0,
    ) -> None:
        self.client = client
        self.spiders_dir = Path(spiders_dir)
        self._concurrency_override = concurrency
        self.grace_s = grace_s
        self.worker_id = ""
        self._buffer: asyncio.Queue[Lease | None] = asyncio.Queue()
        self._outcomes: list[Outcome] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._state = "running"
        self._fingerprinter = Fingerprinter()
        self._sent: dict[int, int] = {}  # fingerprint -> least depth already sent
        self._sent_urls: dict[str, int] = {}  # exact URL -> least depth already sent
        # Leases held, from lease until the server has answered their outcome: lease id
        # -> URL, and URL -> how many (two when an expired lease's page came back to us).
        self._lease_urls: dict[int, str] = {}
        self._leased: dict[str, int] = {}
        self._keys: dict[str, str] = {}  # scheme://authority -> politeness key
        # politeness_key=ip: "" in _keys marks an authority whose key needs a DNS lookup.
        self._ip_keys: IpKeys | None = None
        self._watch = LoopWatch()
        self.pages = 0

    # -- set-up --------------------------------------------------------------------
    async def _join(self) -> None:
        welcome = await self.client.hello({"host": socket.gethostname(), "pid": os.getpid()})
        self.worker_id = welcome["worker_id"]
        overrides = (
            {"concurrency": self._concurrency_override} if self._concurrency_override else {}
        )
        self.settings = Settings.merge(welcome["settings"], overrides)
        spider_file = welcome.get("spider_file")
        if spider_file and Path(spider_file).is_file():
            spider_cls = load_spider(spider_file)
        else:
            spider_cls = load_spider(welcome["spider"], self.spiders_dir)
        self.spider: Spider = spider_cls(**welcome["spider_args"])
        # What the server's spider set in __init__ and its start code, over our own.
        apply_spider_state(self.spider, welcome.get("spider_state") or {})
        self._handle_status = set(self.settings.handle_httpstatus_list) | set(
            getattr(self.spider, "handle_httpstatus_list", ())
        )
        self._retry_codes = frozenset(self.settings.retry_http_codes)
        self._depth_priority = self.settings.depth_priority
        key = self.settings.politeness_key
        self._key_of = domain_of if key == "domain" else ip_key_nowait if key == "ip" else host_of
        if key == "ip":
            self._ip_keys = IpKeys(self._keys, self.settings.connect_timeout_s)
        spider = self.spider
        mws = [
            *self.settings.downloader_middlewares,
            *getattr(spider, "downloader_middlewares", ()),
        ]
        pls = [*self.settings.item_pipelines, *getattr(spider, "item_pipelines", ())]
        self._middlewares = Middlewares(load_components(mws, spider), spider) if mws else None
        self._pipelines = Pipelines(load_components(pls, spider), spider) if pls else None
        c = self.settings.concurrency
        self._hold = c + max(2, c // 2)  # leases held: the slots plus a prefetch buffer
        self._flush_at = max(1, c // 4)
        logger.info(
            "worker %s running spider %r, concurrency %d", self.worker_id, self.spider.name, c
        )

    # -- the main loop -------------------------------------------------------------
    async def run(self) -> int:
        await self._join()
        every_s = min(1.0, self.settings.worker_timeout_s / 4)
        heartbeat = Heartbeat(self.client, self.worker_id, self._watch, every_s)
        heartbeat.start()
        ticker = asyncio.create_task(self._watch.tick())
        try:
            return await self._run()
        finally:
            ticker.cancel()
            await asyncio.to_thread(heartbeat.stop)

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        if self._pipelines is not None:
            try:
                await self._pipelines.open()
            except SpiderfarmError:
                # Every worker would fail the same way: leave (holding nothing) and say why.
                with contextlib.suppress(ConnectError):
                    await self.client.bye(self.worker_id)
                await self.client.close()
                raise
        try:
            async with Fetcher(self.settings) as fetcher:
                self._fetcher = fetcher
                slots = [
                    asyncio.create_task(self._slot()) for _ in range(self.settings.concurrency)
                ]
                try:
                    await self._pump()
                finally:
                    for _ in slots:
                        self._buffer.put_nowait(None)
                    for task in slots:
                        task.cancel()
                    await asyncio.gather(*slots, return_exceptions=True)
            await self.client.bye(self.worker_id)
        finally:
            if self._pipelines is not None:
                await self._pipelines.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.client.close()
        logger.info("worker %s done: %d pages", self.worker_id, self.pages)
        return 0

    def stop(self) -> None:
        """Begin a clean drain (the SIGINT/SIGTERM handler)."""
        if not self._stopping:
            logger.info("worker %s stopping: finishing in-flight requests", self.worker_id)
            self._stopping = True
            self._stop_at = time.monotonic() + self.grace_s
            self._wake.set()

    def _release_buffered(self) -> None:
        while not self._buffer.empty():
            lease = self._buffer.get_nowait()
            if lease is not None:
                self._outcomes.append((lease[0], "release", "", [], [], NO_INFO))

    async def _pump(self) -> None:
        idle_poll = 0.02
        last_call = 0.0
        client, worker_id = self.client, self.worker_id
        while True:
            ending = self._stopping or self._state in (CLOSING, FINISHED)
            if ending:
                self._release_buffered()
                if (
                    self._in_flight == 0
                    and not self._outcomes
                    and (self._stopping or self._state == FINISHED)
                ):
                    return
                if self._stopping and time.monotonic() > self._stop_at:
                    logger.warning(
                        "grace period over: abandoning %d in-flight requests", self._in_flight
                    )
                    return
            held = self._buffer.qsize() + self._in_flight
            want = 0 if ending else min(self._hold - held, MAX_BATCH)
            now = time.monotonic()
            due = now - last_call > 1.0  # heartbeat
            if self._outcomes or want >= self._flush_at or due:
                outcomes, self._outcomes = self._outcomes, []
                try:
                    leases, refused, self._state = await client.exchange(worker_id, outcomes, want)
                except ConnectError:
                    raise
                except Exception as exc:
                    # The server refused the batch (or it would not pickle): send the
                    # outcomes one by one, so that only a bad one is lost.
                    logger.error(
                        "server refused a batch of %d outcomes (%s: %s); sending them one by one",
                        len(outcomes), type(exc).__name__, exc,
                    )  # fmt: skip
                    await self._send_singly(outcomes)
                    if not outcomes:  # not ours to blame: do not spin on a failing server
                        await asyncio.sleep(0.5)
                    last_call = time.monotonic()
                    continue
                last_call = time.monotonic()
                if refused:
                    logger.warning(
                        "server refused %d late acks (their leases had expired)", len(refused)
                    )
                    self._forget_sent(outcomes, refused)
                self._settle(outcomes)
                urls, leased = self._lease_urls, self._leased
                for lease in leases:
                    url = urls[lease[0]] = lease[2][W_URL]
                    leased[url] = leased.get(url, 0) + 1
                    self._buffer.put_nowait(lease)
                if want and not leases and not outcomes:
                    idle_poll = min(idle_poll * 2, 0.1)  # nothing to do yet: back off
                else:
                    idle_poll = 0.02
                if self._outcomes or (want and leases):
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # Jittered: workers polling in lockstep would let the one that just acked
                # win a politeness-spaced host's next lease, again and again.
                wait = idle_poll * random.uniform(0.5, 1.5) if not ending else 0.05
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _send_singly(self, outcomes: list[Outcome]) -> None:
        """Send each outcome on its own; log and drop the ones the server refuses."""
        for outcome in outcomes:
            lease_id = outcome[0]
            try:
                _, refused, self._state = await self.client.exchange(self.worker_id, [outcome], 0)
            except ConnectError:
                raise
            except Exception as exc:
                logger.error(
                    "dropping the outcome of %s (%s, lease %d): %s: %s",
                    self._lease_urls.get(lease_id, "a request"), outcome[1], lease_id,
                    type(exc).__name__, exc,
                )  # fmt: skip
                refused = [lease_id]
            if refused:
                self._forget_sent([outcome], refused)
            self._settle([outcome])

    def _settle(self, outcomes: list[Outcome]) -> None:
        urls, leased = self._lease_urls, self._leased
        for outcome in outcomes:
            url = urls.pop(outcome[0], None)
            if url is not None:
                if leased[url] > 1:
                    leased[url] -= 1
                else:
                    del leased[url]

    def _forget_sent(self, outcomes: list[Outcome], refused: list[int]) -> None:
        """Un-record the links of outcomes the server never took: when their page is
        fetched again, its links must go out again. (A page fetched again while its first
        outcome is still unanswered sends its links regardless: see ``_CallbackResult``.)"""
        lost = set(refused)
        sent, sent_urls = self._sent, self._sent_urls
        for outcome in outcomes:
            if outcome[0] in lost:
                for fp, _, wire in outcome[3]:
                    sent.pop(fp, None)
                    sent_urls.pop(wire[W_URL], None)

    async def _slot(self) -> None:
        buffer = self._buffer
        while True:
            lease = await buffer.get()
            if lease is None:
                return
            self._in_flight += 1
            try:
                outcome = await self._process(lease)
            except Exception:  # a bug of ours: never lose the lease silently
                logger.exception("internal error processing %s", lease[2][0])
                outcome = (lease[0], "fail", "internal_error", [], [], NO_INFO)
            finally:
                self._in_flight -= 1
            self._outcomes.append(outcome)
            if len(self._outcomes) >= self._flush_at or buffer.qsize() < self._flush_at:
                self._wake.set()

    # -- one request ---------------------------------------------------------------
    async def _process(self, lease: Lease) -> Outcome:
        lease_id, attempt, wire = lease
        request = Request.from_wire(wire)
        if request.callback == ROBOTS_CALLBACK:
            return await self._fetch_robots(lease_id, request)
        started = time.monotonic()
        mw = self._middlewares
        response: Response | Request | None = None
        try:
            if mw is not None:
                response = await mw.request(request)
            if response is None:
                try:
                    response = await self._fetcher.fetch(request)
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
            result = _CallbackResult()
            self._collect(response, request, result, depth=request.depth)
            if self._ip_keys is not None and result.requests:
                await self._ip_keys.fill(result.requests)
            notes = join_notes(["requests/rescheduled", *result.notes])
            return (lease_id, "skip", notes, result.requests, [], NO_INFO)
        self.pages += 1
        status = response.status
        if not 200 <= status < 300 and status not in self._handle_status:
            retry = status in self._retry_codes
            wait = retry_after_s(response.headers.get("Retry-After")) if retry else 0.0
            error = FetchError(request.url, f"http_{status}")
            return await self._failed(
                request, lease_id, attempt, error, retry, (status, latency, wait)
            )
        result = await self._run_callback(
            request, response, request.callback or "parse", request.cb_kwargs
        )
        kind: Kind = "close" if result.close_reason else "ok"
        reason = result.close_reason or join_notes(result.notes)
        return (lease_id, kind, reason, result.requests, result.items, (status, latency, 0.0))

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
                response = await self._fetcher.fetch(request)
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
        info: tuple[int, float, float],
    ) -> Outcome:
        kind: Kind = "retry" if retry else "fail"
        if request.errback and (not retry or attempt >= self.settings.max_retries):
            # The errback sees the final failure only (Scrapy's ``errback(failure)``, with
            # ``failure.request``); its output is acked with it. The kind stays "retry" so
            # that the frontier dead-letters a request that ran out of retries.
            exc.request = request  # type: ignore[attr-defined]
            result = await self._run_callback(request, exc, request.errback, None)
            # The errback's own counters (callback_error, bad_item ...) ride after the reason.
            reason = with_errback_notes(exc.reason, result.notes)
            return (lease_id, kind, reason, result.requests, result.items, info)
        return (lease_id, kind, exc.reason, [], [], info)

    async def _run_callback(
        self,
        request: Request,
        arg: Response | FetchError,
        name: str,
        kwargs: dict[str, Any] | None = None,
    ) -> _CallbackResult:
        result = _CallbackResult(self._leased.get(request.url, 0) > 1)
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
                if not inspect.isgenerator(output) and _single(output):
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
        if self._ip_keys is not None and result.requests:
            await self._ip_keys.fill(result.requests)
        return result

    async def _run_pipelines(self, result: _CallbackResult, request: Request) -> None:
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

    def _collect(
        self, value: Any, parent: Request, result: _CallbackResult, depth: int | None = None
    ) -> None:
        if value is None:
            return
        if isinstance(value, Request):
            depth = parent.depth + 1 if depth is None else depth
            url = value.url
            plain = value.method == "GET" and value.body is None and not value.dont_filter
            sent_urls = self._sent_urls
            if plain:
                # Most links on a page were sent before: drop them by their exact text,
                # before paying for canonicalisation and hashing.
                known = sent_urls.get(url)
                if known is not None and known <= depth and not result.again:
                    return
                if len(sent_urls) > 1_000_000:
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
            # server refuses the ack that carries it: see _forget_sent).
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
            value.depth = depth
            if self._depth_priority:
                value.priority -= depth * self._depth_priority
            wire = value.to_wire()
            # Headers, meta and cb_kwargs may hold any object; one that does not pickle
            # would fail the whole exchange, so it is found here, while its URL is known.
            if (value.headers or value.meta or value.cb_kwargs) and not self._pickles(wire, result):
                return
            if not value.dont_filter:
                if len(self._sent) > 1_000_000:
                    self._sent.clear()
                self._sent[fp] = depth
            if plain:
                sent_urls[url] = depth
            result.requests.append((fp, self._politeness_key(url), wire))
        elif self._pipelines is not None:
            result.raw.append(value)
        else:
            self._encode(value, parent, result)

    def _pickles(self, wire: WireRequest, result: _CallbackResult) -> bool:
        try:
            ForkingPickler.dumps(wire)
        except Exception as exc:
            logger.error(
                "spider %s: dropping request %s: its headers, meta or cb_kwargs do not "
                "pickle (%s: %s); requests cross processes, so give them plain data",
                self.spider.name, wire[W_URL], type(exc).__name__, exc,
            )  # fmt: skip
            result.notes.append("requests/unpicklable")
            return False
        return True

    def _politeness_key(self, url: str) -> str:
        """``_key_of(url)``, cached by the URL's scheme and authority (a crawl has few);
        with politeness_key=ip, ``""`` until ``IpKeys.fill`` has looked the host up."""
        end = url.find("/", url.find("//") + 2)
        authority = url if end == -1 else url[:end]
        key = self._keys.get(authority)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[authority] = self._key_of(url)
        return key

    def _encode(self, item: Any, parent: Request, result: _CallbackResult) -> None:
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


if __name__ == "__main__":
    from .cli import worker_main

    raise SystemExit(worker_main())
