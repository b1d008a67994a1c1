"""The coordination server: a BaseManager that exposes one frontier service to workers.

``python -m spiderfarm.server SPIDER`` runs it alone; ``crawl`` runs it beside its workers.
The manager serves every connection on its own thread; the service's methods are batched
so that one round trip moves hundreds of requests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .errors import SpiderfarmError
from .feeds import FeedSpec, as_feed_specs, open_feeds
from .frontier import Frontier
from .ipkeys import BlockingIpKeys
from .journal import Journal
from .manager import ManagerServer
from .protocol import EXPOSED, FINISHED, SERVICE, Lease, Outcome
from .security import MAX_BATCH, MAX_ITEM_BYTES, MAX_LINKS_PER_PAGE, check_exchange
from .settings import Settings
from .spider import load_spider
from .start import StartFeeder, StartStream, spider_state
from .urls import domain_of, host_of, ip_key_nowait

logger = logging.getLogger(__name__)

__all__ = ["FarmServer", "ServerConfig"]



@dataclass(slots=True)
class ServerConfig:
    spider_ref: str
    spiders_dir: Path = Path("spiders")
    spider_args: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    # Feeds: FeedSpecs (as -o/-O make them), or strings read as -o reads them.
    output: str | Sequence[str | FeedSpec] | None = None
    bind: tuple[str, int] = ("127.0.0.1", 0)
    authkey: bytes = b""
    job_dir: Path | None = None


class FrontierService:
    """The object workers call through their proxies; every method returns plain data."""

    def __init__(self, frontier: Frontier, welcome: dict[str, Any]) -> None:
        self._frontier = frontier
        self.welcome = welcome
        self._ids = 0
        self._lock = threading.Lock()
        self.goodbyes: set[str] = set()

    def hello(self, info: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._ids += 1
            worker_id = f"w{self._ids}-{str(info.get('host', '?'))[:40]}-{info.get('pid', 0)}"
        logger.info("worker %s joined", worker_id)
        return {**self.welcome, "worker_id": worker_id}

    def exchange(
        self, worker_id: str, outcomes: list[Outcome], want: int
    ) -> tuple[list[Lease], list[int], str]:
        try:
            check_exchange(
                worker_id, outcomes, want, max_batch=MAX_BATCH, max_item_bytes=MAX_ITEM_BYTES,
                max_links=MAX_LINKS_PER_PAGE,
            )  # fmt: skip
        except ValueError as exc:
            logger.error("worker %.200r: %s", worker_id, exc)
            raise
        return self._frontier.exchange(worker_id, outcomes, want)

    def heartbeat(self, worker_id: str, lag_s: float) -> None:
        if not isinstance(worker_id, str) or type(lag_s) not in (int, float):
            raise ValueError("heartbeat takes (worker_id: str, lag_s: float)")
        self._frontier.heartbeat(worker_id, min(max(float(lag_s), 0.0), 1e9))

    def status(self, detail: bool = False) -> dict[str, Any]:
        return self._frontier.status(detail is True)

    def bye(self, worker_id: str) -> None:
        self._frontier.forget_worker(worker_id)
        with self._lock:
            self.goodbyes.add(worker_id)
        logger.info("worker %s left", worker_id)


class FarmServer:
    """The frontier, its feed and the manager listening for workers."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.spider_cls = load_spider(config.spider_ref, config.spiders_dir)
        self.settings = Settings.merge(self.spider_cls.custom_settings, config.overrides)
        self.spider = self.spider_cls(**config.spider_args)
        self.journal = Journal(config.job_dir) if config.job_dir else None
        saved = self.journal.load() if self.journal else None
        if saved is not None and saved.meta.get("spider") != self.spider_cls.name:
            raise SpiderfarmError(
                f"job dir {str(config.job_dir)!r} holds a crawl of spider "
                f"{saved.meta.get('spider')!r}, not {self.spider_cls.name!r}; use another --job-dir"
            )
        self.feed = open_feeds(
            as_feed_specs(config.output),
            fields=self.settings.feed_fields,
            job_dir=str(config.job_dir) if config.job_dir is not None else None,
            resumed=saved.feed_offsets if saved is not None else None,
        )
        self.frontier = Frontier(
            self.settings,
            allowed_domains=self.spider.allowed_domains,
            write_items=self.feed.write,
            journaled=self.journal is not None,
        )
        if self.journal is not None and saved is not None:
            queued = self.frontier.restore(
                self.journal.fingerprints(), self.journal.queued(), saved.stats,
                saved.dead_letters,
            )  # fmt: skip
            self.frontier.set_next_rid(saved.next_rid)
            logger.info("resuming from %s: %d requests queued", config.job_dir, queued)
        self._committer: threading.Thread | None = None
        spider_file = (
            str(Path(config.spider_ref).resolve()) if config.spider_ref.endswith(".py") else None
        )
        self.service = FrontierService(
            self.frontier,
            {
                "spider": self.spider_cls.name,
                "spider_file": spider_file,
                "spider_args": dict(config.spider_args),
                "settings": self.settings.to_dict(),
            },
        )
        self._server: ManagerServer | None = None
        self._feeder: StartFeeder | None = None
        self._close_requested = ""
        self.address: tuple[str, int] = config.bind

    def seed(self) -> int:
        """Read the spider's first start requests into the frontier (the rest stream in
        as the queue runs low, once ``listen`` has started the farm) and take the
        spider's state for the workers; returns how many requests were accepted so far.

        Raises:
            SpiderfarmError: the spider's start code failed in its first batch.
        """
        policy = self.settings.politeness_key
        key_of = domain_of if policy == "domain" else ip_key_nowait if policy == "ip" else host_of
        fill = BlockingIpKeys().fill if policy == "ip" else None
        self.frontier.open_start()
        self._feeder = StartFeeder(StartStream(self.spider, key_of), self.frontier, fill)
        try:
            accepted = self._feeder.pull(strict=True)
        except BaseException:
            self.frontier.end_start()
            raise
        if self._feeder.stream.exhausted:
            self.frontier.end_start()
        # What __init__ and the start code have set so far reaches every worker's spider.
        self.service.welcome["spider_state"] = spider_state(self.spider)
        return accepted

    def listen(self) -> tuple[str, int]:
        """Start accepting workers; returns the bound address (the real port for port 0)."""
        service = self.service
        registry = {SERVICE: (lambda: service, EXPOSED, None, None)}
        server = ManagerServer(registry, self.config.bind, self.config.authkey)
        self._server = server
        host, port = cast(tuple[str, int], server.address)
        self.address = (host, port)
        server.start()
        if self._feeder is not None:
            self._feeder.start()
        if self.journal is not None:
            self._committer = threading.Thread(target=self._commit_loop, name="journal")
            self._committer.start()
        return self.address

    def request_close(self, reason: str) -> None:
        """Ask ``wait`` to close the crawl at its next tick. Safe in a signal handler: it
        takes no lock (the handler may interrupt this very thread holding the frontier's)."""
        self._close_requested = reason

    def wait(self, on_tick: Any = None, tick_s: float = 0.5) -> None:
        """Block until the crawl is finished (``request_close`` ends it early)."""
        while self.frontier.tick() != FINISHED:
            if self._close_requested:
                self.frontier.close(self._close_requested)
            if on_tick is not None:
                on_tick()
            # Items reach the file within a tick, for anyone watching it grow.
            self.frontier.flush_feed(self.feed.flush)
            time.sleep(tick_s)

    def linger(self, expected_workers: int, timeout_s: float) -> None:
        """After the end, give workers time to learn it and say goodbye."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alive = self.frontier.status()["workers"]
            if alive == 0 or len(self.service.goodbyes) >= expected_workers:
                return
            time.sleep(0.05)

    def _commit(self) -> None:
        """Write the frontier's changes and the matching feed offsets to the job dir; if
        that fails, the changes go back to the frontier for the next commit."""
        assert self.journal is not None
        ops, offsets, stats, state, reason = self.frontier.checkpoint(self.feed.offsets)
        meta = {
            "spider": self.spider_cls.name,
            "feeds": json.dumps(offsets),
            "stats": json.dumps(stats),
            "state": state,
            "close_reason": reason,
        }
        try:
            self.journal.commit(ops, meta)
        except BaseException:
            self.frontier.uncheckpoint(ops)
            raise

    def _commit_loop(self, every_s: float = 0.2) -> None:
        assert self._server is not None
        while not self._server.stop_event.wait(every_s):
            try:
                self._commit()
            except Exception:
                logger.exception("cannot write the job journal; will retry")

    def stop(self) -> None:
        if self._feeder is not None:
            self._feeder.stop()
        if self._server is not None:
            self._server.stop()
        if self._committer is not None:
            self._committer.join()
        if self.journal is not None:
            self._commit()  # the last changes, and the final state
            self.journal.close()
        self.feed.close()


if __name__ == "__main__":
    from .cli import server_main

    raise SystemExit(server_main())
