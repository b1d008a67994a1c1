"""The worker: hello, then lease -> fetch -> callbacks -> ack, under bounded concurrency.

One pump task talks to the server (one ``exchange`` round trip acks finished requests
and leases new ones); ``concurrency`` slot tasks run leases through the ``PageRunner``.
A prefetch buffer keeps the slots fed while a round trip is in flight. SIGINT/SIGTERM
drain: stop leasing, hand back what has not started, finish or abandon in-flight work
within a grace period, ack, say goodbye, exit 0. Everything that depends on the crawl
(settings, spider, links, page runner) is built from the server's ``hello``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

from ..client import FrontierClient
from ..errors import ConnectError, SpiderfarmError
from ..fetch import Fetcher, Sessions
from ..heartbeat import Heartbeat, LoopWatch
from ..middleware import Middlewares, Pipelines, load_components
from ..protocol import CLOSING, FINISHED, MAX_BATCH, NO_INFO, W_URL, Lease, Outcome
from ..settings import Settings
from ..spider import Spider, load_spider
from ..start import apply_spider_state
from .hold import Hold
from .links import Links
from .page import PageRunner

logger = logging.getLogger("spiderfarm.worker")

__all__ = ["Crawl", "Worker"]


class Crawl:
    """What a worker learns from ``hello``: its id, the settings, the spider and its
    components, ready to run."""

    def __init__(self, welcome: dict[str, Any], spiders_dir: Path, concurrency: int | None) -> None:
        self.worker_id: str = welcome["worker_id"]
        overrides = {"concurrency": concurrency} if concurrency else {}
        self.settings = Settings.merge(welcome["settings"], overrides)
        spider_file = welcome.get("spider_file")
        if spider_file and Path(spider_file).is_file():
            spider_cls = load_spider(spider_file)
        else:
            spider_cls = load_spider(welcome["spider"], spiders_dir)
        self.spider: Spider = spider_cls(**welcome["spider_args"])
        # What the server's spider set in __init__ and its start code, over our own.
        apply_spider_state(self.spider, welcome.get("spider_state") or {})
        spider, settings = self.spider, self.settings
        mws = [*settings.downloader_middlewares, *getattr(spider, "downloader_middlewares", ())]
        pls = [*settings.item_pipelines, *getattr(spider, "item_pipelines", ())]
        self.middlewares = Middlewares(load_components(mws, spider), spider) if mws else None
        self.pipelines = Pipelines(load_components(pls, spider), spider) if pls else None
        self.links = Links(settings, spider.name, spider.allowed_domains)

    @classmethod
    def offline(
        cls,
        spider_ref: str,
        *,
        spiders_dir: Path | str = "spiders",
        settings: dict[str, Any] | None = None,
        spider_args: dict[str, str] | None = None,
    ) -> Crawl:
        """The crawl a server would describe in ``hello``, built here without one: for
        tests and benchmarks that run pages through a ``PageRunner``."""
        spider_file = spider_ref if spider_ref.endswith(".py") else None
        spider_cls = load_spider(spider_ref, spiders_dir)
        welcome = {
            "worker_id": "offline",
            "spider": spider_cls.name,
            "spider_file": str(Path(spider_file).resolve()) if spider_file else None,
            "spider_args": dict(spider_args or {}),
            "settings": Settings.merge(spider_cls.custom_settings, settings or {}).to_dict(),
        }
        return cls(welcome, Path(spiders_dir), None)


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
        # Leases held, from lease until the server has answered their outcome: lease id
        # -> URL, and URL -> how many (two when an expired lease's page came back to us).
        self._lease_urls: dict[int, str] = {}
        self._leased: dict[str, int] = {}
        self._watch = LoopWatch()
        self._runner: PageRunner | None = None
        self._sessions: Sessions | None = None  # the cookie jars, with cookies enabled

    @property
    def pages(self) -> int:
        return self._runner.pages if self._runner is not None else 0

    # -- set-up --------------------------------------------------------------------
    async def _join(self) -> Crawl:
        welcome = await self.client.hello({"host": socket.gethostname(), "pid": os.getpid()})
        crawl = Crawl(welcome, self.spiders_dir, self._concurrency_override)
        self.worker_id = crawl.worker_id
        c = crawl.settings.concurrency
        self._hold = Hold(c)  # leases held: up to the slots plus a prefetch buffer
        logger.info(
            "worker %s running spider %r, concurrency %d", self.worker_id, crawl.spider.name, c
        )
        return crawl

    # -- the main loop -------------------------------------------------------------
    async def run(self) -> int:
        crawl = await self._join()
        every_s = min(1.0, crawl.settings.worker_timeout_s / 4)
        heartbeat = Heartbeat(self.client, self.worker_id, self._watch, every_s)
        heartbeat.start()
        ticker = asyncio.create_task(self._watch.tick())
        try:
            return await self._run(crawl)
        finally:
            ticker.cancel()
            await asyncio.to_thread(heartbeat.stop)

    async def _run(self, crawl: Crawl) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        if crawl.pipelines is not None:
            try:
                await crawl.pipelines.open()
            except SpiderfarmError:
                # Every worker would fail the same way: leave (holding nothing) and say why.
                with contextlib.suppress(ConnectError):
                    await self.client.bye(self.worker_id)
                await self.client.close()
                raise
        try:
            self._sessions = Sessions() if crawl.settings.cookies_enabled else None
            handled = getattr(crawl.spider, "handle_httpstatus_list", ())
            fetcher = Fetcher(crawl.settings, sessions=self._sessions, handle_httpstatus=handled)
            async with fetcher:
                self._runner = PageRunner(
                    crawl.spider, crawl.settings, fetcher, crawl.links,
                    middlewares=crawl.middlewares, pipelines=crawl.pipelines,
                    watch=self._watch, leased=self._leased,
                )  # fmt: skip
                slots = [
                    asyncio.create_task(self._slot(self._runner))
                    for _ in range(crawl.settings.concurrency)
                ]
                try:
                    await self._pump(crawl.links)
                finally:
                    for _ in slots:
                        self._buffer.put_nowait(None)
                    for task in slots:
                        task.cancel()
                    await asyncio.gather(*slots, return_exceptions=True)
            await self.client.bye(self.worker_id)
        finally:
            if crawl.pipelines is not None:
                await crawl.pipelines.close()
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

    async def _pump(self, links: Links) -> None:
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
            now = time.monotonic()
            hold = self._hold
            hold.sample(now)
            held = self._buffer.qsize() + self._in_flight
            want = 0 if ending else max(0, min(hold.leases - held, MAX_BATCH))
            due = now - last_call > 1.0  # heartbeat
            if self._outcomes or want >= hold.flush_at or due:
                outcomes, self._outcomes = self._outcomes, []
                sessions = self._sessions
                try:
                    if sessions is None:
                        leases, refused, self._state = await client.exchange(
                            worker_id, outcomes, want
                        )
                    else:
                        # The cookies the pages set travel with their outcomes (a batch
                        # the server refuses loses them); the jars come back before the
                        # leases that need them run.
                        leases, refused, self._state, jars = await client.exchange_sessions(
                            worker_id, outcomes, want, sessions.take_changes()
                        )
                        if jars:
                            sessions.load(jars)
                except ConnectError:
                    raise
                except Exception as exc:
                    # The server refused the batch (or it would not pickle): send the
                    # outcomes one by one, so that only a bad one is lost.
                    logger.error(
                        "server refused a batch of %d outcomes (%s: %s); sending them one by one",
                        len(outcomes), type(exc).__name__, exc,
                    )  # fmt: skip
                    await self._send_singly(outcomes, links)
                    if not outcomes:  # not ours to blame: do not spin on a failing server
                        await asyncio.sleep(0.5)
                    last_call = time.monotonic()
                    continue
                last_call = time.monotonic()
                if refused:
                    logger.warning(
                        "server refused %d late acks (their leases had expired)", len(refused)
                    )
                    links.forget(outcomes, refused)
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

    async def _send_singly(self, outcomes: list[Outcome], links: Links) -> None:
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
                links.forget([outcome], refused)
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

    async def _slot(self, runner: PageRunner) -> None:
        buffer, stats, hold = self._buffer, runner.stats, self._hold
        while True:
            lease = await buffer.get()
            if lease is None:
                return
            self._in_flight += 1
            try:
                outcome = await runner.process(lease)
            except Exception:  # a bug of ours: never lose the lease silently
                logger.exception("internal error processing %s", lease[2][0])
                outcome = (lease[0], "fail", "internal_error", [], [], NO_INFO)
            finally:
                self._in_flight -= 1
            if stats.pending:  # the spider counted something (spider.stats): it rides along
                outcome = runner.add_stats(outcome)
            self._outcomes.append(outcome)
            flush_at = hold.flush_at
            if len(self._outcomes) >= flush_at or buffer.qsize() < flush_at:
                self._wake.set()
