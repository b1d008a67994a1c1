"""The coordination server: a BaseManager that exposes one frontier service to workers.

``python -m spiderfarm.server SPIDER`` runs it alone; ``crawl`` runs it beside its workers.
The manager serves every connection on its own thread; the service's methods are batched
so that one round trip moves hundreds of requests.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Listener
from multiprocessing.managers import Server
from pathlib import Path
from typing import Any, cast

from .errors import SettingsError, SpiderfarmError
from .feeds import FeedSink, NullFeed, open_feed
from .frontier import FINISHED, Frontier, Lease, Outcome, PushEntry
from .http import InvalidRequest, Request, current_spider
from .journal import Journal
from .settings import Settings
from .spider import Spider, load_spider
from .urls import Fingerprinter, host_of

logger = logging.getLogger(__name__)

__all__ = ["FarmServer", "ServerConfig", "load_authkey", "parse_address"]

SERVICE = "frontier"
EXPOSED = ("hello", "exchange", "status", "bye")


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) -> (host, port).

    Raises:
        SettingsError: no port, or a port that is not a number in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        raise SettingsError(f"address {text!r} must be HOST:PORT, for example 127.0.0.1:5000")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise SettingsError(f"address {text!r} has no valid port (0..65535)")
    return host.strip("[]") or default_host, number


def load_authkey(path: str | None, env_value: str | None) -> bytes | None:
    """The authkey from a key file or ``SPIDERFARM_AUTHKEY``; None if neither is given.

    A key of 64+ hex digits is decoded to bytes; anything else is used as it is.
    """
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read authkey file {path!r}: {exc.strerror}") from None
    elif env_value:
        text = env_value.strip()
    else:
        return None
    if not text:
        raise SettingsError(f"authkey from {path or 'SPIDERFARM_AUTHKEY'} is empty")
    try:
        return bytes.fromhex(text) if len(text) >= 64 else text.encode()
    except ValueError:
        return text.encode()


def write_new_authkey() -> tuple[bytes, Path]:
    """Generate a 32-byte key and write it as hex to a new mode-0600 file."""
    key = secrets.token_bytes(32)
    fd, name = tempfile.mkstemp(prefix="spiderfarm-", suffix=".key")  # created 0600
    with open(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key, Path(name)


@dataclass(slots=True)
class ServerConfig:
    spider_ref: str
    spiders_dir: Path = Path("spiders")
    spider_args: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    bind: tuple[str, int] = ("127.0.0.1", 0)
    authkey: bytes = b""
    job_dir: Path | None = None


class _ManagerServer(Server):
    """The stock manager server, minus what workers must not reach.

    Workers need only ``create`` (to name the service) and ``accept_connection`` (to call
    it); ``shutdown``, ``debug_info`` and reference counting stay closed to them.
    """

    public = ["create", "accept_connection"]  # noqa: RUF012 - overrides Server.public
    listener: Listener

    def __init__(
        self, registry: dict[str, Any], address: tuple[str, int], authkey: bytes, serializer: str
    ) -> None:
        super().__init__(registry, address, authkey, serializer)
        self.stop_event = threading.Event()  # serve_client() polls it


class FrontierService:
    """The object workers call through their proxies; every method returns plain data."""

    def __init__(self, frontier: Frontier, welcome: dict[str, Any]) -> None:
        self._frontier = frontier
        self._welcome = welcome
        self._ids = 0
        self._lock = threading.Lock()
        self.goodbyes: set[str] = set()

    def hello(self, info: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._ids += 1
            worker_id = f"w{self._ids}-{str(info.get('host', '?'))[:40]}-{info.get('pid', 0)}"
        logger.info("worker %s joined", worker_id)
        return {**self._welcome, "worker_id": worker_id}

    def exchange(
        self, worker_id: str, outcomes: list[Outcome], want: int
    ) -> tuple[list[Lease], list[int], str]:
        return self._frontier.exchange(worker_id, outcomes, want)

    def status(self) -> dict[str, Any]:
        return self._frontier.status()

    def bye(self, worker_id: str) -> None:
        self._frontier.forget_worker(worker_id)
        with self._lock:
            self.goodbyes.add(worker_id)
        logger.info("worker %s left", worker_id)


def start_entries(spider: Spider) -> Iterable[PushEntry]:
    """The spider's start requests as frontier entries (plain data)."""
    fingerprinter = Fingerprinter()
    token = current_spider.set(spider)
    try:
        for req in spider.start_requests() or ():
            if not isinstance(req, Request):
                raise SpiderfarmError(
                    f"spider {spider.name!r}: start_requests() yielded {req!r}; "
                    "it must yield Request objects"
                )
            yield (
                fingerprinter.fingerprint(req.url, req.method, req.body),
                host_of(req.url),
                req.to_wire(),
            )
    except InvalidRequest as exc:
        raise SpiderfarmError(f"spider {spider.name!r}: bad start request: {exc}") from None
    finally:
        current_spider.reset(token)


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
        self._feed_path = str(Path(config.output).resolve()) if config.output else ""
        if config.output:
            same_feed = saved is not None and saved.meta.get("feed_path") == self._feed_path
            resume_at = saved.feed_offset if saved is not None and same_feed else None
            self.feed: FeedSink = open_feed(config.output, resume_at=resume_at)
        else:
            self.feed = NullFeed()
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
        self._server: _ManagerServer | None = None
        self.address: tuple[str, int] = config.bind

    def seed(self) -> int:
        """Push the start requests, in batches; returns how many were accepted."""
        accepted, batch = 0, []
        for entry in start_entries(self.spider):
            batch.append(entry)
            if len(batch) >= 10_000:
                accepted += self.frontier.push(batch)
                batch = []
        return accepted + self.frontier.push(batch)

    def listen(self) -> tuple[str, int]:
        """Start accepting workers; returns the bound address (the real port for port 0)."""
        service = self.service
        registry = {SERVICE: (lambda: service, EXPOSED, None, None)}
        server = _ManagerServer(registry, self.config.bind, self.config.authkey, "pickle")
        self._server = server
        host, port = cast(tuple[str, int], server.address)
        self.address = (host, port)
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()
        if self.journal is not None:
            self._committer = threading.Thread(target=self._commit_loop, name="journal")
            self._committer.start()
        return self.address

    def _accept_loop(self) -> None:
        server = self._server
        assert server is not None
        while not server.stop_event.is_set():
            try:
                conn = server.listener.accept()
            except OSError:
                if server.stop_event.is_set():
                    return
                time.sleep(0.01)
                continue
            # handle_request() authenticates before it unpickles anything.
            threading.Thread(target=server.handle_request, args=(conn,), daemon=True).start()

    def wait(self, on_tick: Any = None, tick_s: float = 0.5) -> None:
        """Block until the crawl is finished (call ``frontier.close`` to end it early)."""
        while self.frontier.tick() != FINISHED:
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
        """Write the frontier's changes and the matching feed offset to the job dir."""
        assert self.journal is not None
        ops, offset, stats, state, reason = self.frontier.checkpoint(self.feed.offset)
        meta = {
            "spider": self.spider_cls.name,
            "feed_path": self._feed_path,
            "feed_offset": str(offset),
            "stats": json.dumps(stats),
            "state": state,
            "close_reason": reason,
        }
        self.journal.commit(ops, meta)

    def _commit_loop(self, every_s: float = 0.2) -> None:
        assert self._server is not None
        while not self._server.stop_event.wait(every_s):
            try:
                self._commit()
            except Exception:
                logger.exception("cannot write the job journal; will retry")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop_event.set()
            self._server.listener.close()
        if self._committer is not None:
            self._committer.join()
        if self.journal is not None:
            self._commit()  # the last changes, and the final state
            self.journal.close()
        self.feed.close()


if __name__ == "__main__":
    from .cli import server_main

    raise SystemExit(server_main())
