"""The coordination server: a BaseManager that exposes one frontier service to workers.

``python -m spiderfarm.server SPIDER`` runs it alone; ``crawl`` runs it beside its workers.
The manager serves every connection on its own thread; the service's methods are batched
so that one round trip moves hundreds of requests.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..errors import SpiderfarmError
from ..feeds import FeedSpec, as_feed_specs, open_feeds
from ..frontier import Frontier
from ..ipkeys import BlockingIpKeys
from ..journal import Journal
from ..manager import ManagerServer
from ..protocol import (
    EXPOSED,
    FINISHED,
    MAX_BATCH,
    MAX_ITEM_BYTES,
    MAX_LINKS_PER_PAGE,
    SERVICE,
    CookieChange,
    JarUpdates,
    Lease,
    Outcome,
    check_exchange,
)
from ..settings import Settings
from ..spider import load_spider
from ..start import StartFeeder, StartStream, spider_state
from ..urls import domain_of, host_of, ip_key_nowait
from .queues import (
    RESULT_EXPOSED,
    RESULT_QUEUE,
    TASK_EXPOSED,
    TASK_QUEUE,
    ResultQueue,
    TaskQueue,
    Tasks,
)

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
    # --serve: wait for submitted work instead of finishing, and serve the two queues.
    serve: bool = False


#: How long an idle worker's exchange waits for work (a long poll).
IDLE_WAIT_S = 2.0


class FrontierService:
    """The object workers call through their proxies; every method returns plain data."""

    def __init__(
        self, frontier: Frontier, welcome: dict[str, Any], idle_wait_s: float = 0.0
    ) -> None:
        self._frontier = frontier
        self.welcome = welcome
        self._idle_wait_s = idle_wait_s
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
        self,
        worker_id: str,
        outcomes: list[Outcome],
        want: int,
        cookies: list[CookieChange] | None = None,
    ) -> tuple[list[Lease], list[int], str] | tuple[list[Lease], list[int], str, JarUpdates]:
        """Apply outcomes, lease requests. A worker that sends ``cookies`` (its cookie
        changes, maybe none) is answered the jars it should take as a fourth value."""
        try:
            check_exchange(
                worker_id, outcomes, want, max_batch=MAX_BATCH, max_item_bytes=MAX_ITEM_BYTES,
                max_links=MAX_LINKS_PER_PAGE, cookies=cookies,
            )  # fmt: skip
        except ValueError as exc:
            logger.error("worker %.200r: %s", worker_id, exc)
            raise
        frontier, wait_s = self._frontier, self._idle_wait_s
        if cookies is None:
            return frontier.exchange(worker_id, outcomes, want, wait_s=wait_s)
        leases, refused, state = frontier.exchange(worker_id, outcomes, want, cookies, wait_s)
        return leases, refused, state, frontier.jar_updates(worker_id, leases)

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
            serving=config.serve,
        )
        if self.journal is not None and saved is not None:
            queued = self.frontier.restore(
                self.journal.fingerprints(), self.journal.queued(), saved.stats,
                saved.dead_letters, self.journal.roots(), self.journal.jars(),
                json.loads(saved.meta.get("spider_stats") or "{}"),
            )  # fmt: skip
            self.frontier.set_next_rid(saved.next_rid)
            logger.info("resuming from %s: %d requests queued", config.job_dir, queued)
        self._committer: threading.Thread | None = None
        self._journal_error: str | None = None  # the first failed commit's reason
        self._committed_at = time.monotonic()  # when the job dir was last brought up to date
        self._job_current = True  # the job dir holds the crawl's final state (see stop)
        self._lost_counted = 0  # the feeds' lost items already taken out of the stats
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
            # An idle worker may wait for work, well inside worker_timeout_s.
            min(IDLE_WAIT_S, self.settings.worker_timeout_s / 4),
        )
        self._server: ManagerServer | None = None
        self._feeder: StartFeeder | None = None
        self._close_requested = ""
        self._tasks: Tasks | None = None  # service mode's task checks (made by seed)
        self._task_queue: TaskQueue | None = None  # service mode's (made by listen)
        self.address: tuple[str, int] = config.bind

    def seed(self) -> int:
        """Read the spider's first start requests into the frontier (the rest stream in
        as the queue runs low, once ``listen`` has started the farm) and take the
        spider's state for the workers; returns how many requests were accepted so far.

        Raises:
            SpiderfarmError: the spider's start code failed in its first batch, or the job
                dir cannot be written.
        """
        policy = self.settings.politeness_key
        key_of = domain_of if policy == "domain" else ip_key_nowait if policy == "ip" else host_of
        fill = BlockingIpKeys().fill if policy == "ip" else None
        self._tasks = Tasks(self.spider, key_of, BlockingIpKeys().fill if fill else None)
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
        if self.journal is not None:
            # Before any page is crawled the job dir holds the crawl, so that however soon
            # its disk fills, running the command again resumes it (and does not start
            # afresh, appending every item a second time).
            try:
                self._commit()
            except (OSError, sqlite3.Error) as exc:
                raise SpiderfarmError(
                    f"cannot write the job dir {str(self.config.job_dir)!r}: {exc}; make "
                    "room, or choose another --job-dir"
                ) from None
        return accepted

    def listen(self) -> tuple[str, int]:
        """Start accepting workers; returns the bound address (the real port for port 0)."""
        service = self.service
        registry: dict[str, Any] = {SERVICE: (lambda: service, EXPOSED, None, None)}
        if self.config.serve:
            assert self._tasks is not None and self.frontier.results is not None, "seed first"
            tasks, results = (
                TaskQueue(self.frontier, self._tasks), ResultQueue(self.frontier.results)
            )  # fmt: skip
            self._task_queue = tasks
            registry[TASK_QUEUE] = (lambda: tasks, TASK_EXPOSED, None, None)
            registry[RESULT_QUEUE] = (lambda: results, RESULT_EXPOSED, None, None)
        server = ManagerServer(
            registry, self.config.bind, self.config.authkey,
            unknown_hint="" if self.config.serve else (
                "; the task and result queues are served by a farm started with --serve"
            ),
        )  # fmt: skip
        self._server = server
        host, port = cast(tuple[str, int], server.address)
        self.address = (host, port)
        server.start()
        if self._feeder is not None:
            self._feeder.start()
        if self.journal is not None:
            # A daemon: should anything go wrong on the main thread, it cannot keep the
            # process alive (the job dir stays consistent: SQLite's WAL is crash-safe).
            self._committer = threading.Thread(
                target=self._commit_loop, name="journal", daemon=True
            )
            self._committer.start()
        return self.address

    def submit(self, tasks: list[Any]) -> dict[str, Any]:
        """Service mode: queue tasks as ``get_task_queue().put_many`` does (the same checks).

        Raises:
            ValueError: not serving, or not a list of at most ``MAX_BATCH`` tasks.
        """
        if self._task_queue is None:
            raise ValueError("this farm was not started with --serve: it takes no tasks")
        return self._task_queue.put_many(tasks)

    def request_close(self, reason: str) -> None:
        """Ask ``wait`` to close the crawl at its next tick. Safe in a signal handler: it
        takes no lock (the handler may interrupt this very thread holding the frontier's)."""
        self._close_requested = reason

    def wait(self, on_tick: Any = None, tick_s: float = 0.5) -> None:
        """Block until the crawl is finished (``request_close`` ends it early). A feed
        that cannot be written closes the crawl as ``feed_error``; nothing here raises
        for it."""
        while self.frontier.tick() != FINISHED:
            if self._close_requested:
                self.frontier.close(self._close_requested)
            self._note_spider_stats()
            if on_tick is not None:
                on_tick()
            # Items reach the file within a tick, for anyone watching it grow.
            self._flush_feeds()
            self.frontier.finished.wait(tick_s)  # the end is acted on at once, not a tick late
        self._note_spider_stats()
        self._flush_feeds()

    def _note_spider_stats(self) -> None:
        """What the server's own spider counted (in ``start()``, say) joins the workers'."""
        stats = self.spider.__dict__.get("_stats")
        if stats is not None and stats.pending:
            self.frontier.note_spider_stats(stats.take_notes(budget=2**31))

    def _flush_feeds(self) -> None:
        try:
            self.frontier.flush_feed(self.feed.flush)
        except OSError as exc:  # a gzip feed's flush on a full disk
            logger.error("cannot write items to the feed (%s): closing the crawl", exc)
        if self.feed.failure is not None:  # by an ack's write, a flush, or a sync
            self.frontier.close("feed_error")
        lost = self.feed.lost - self._lost_counted
        if lost:  # counted as written, then cut out of a gzip feed: not in the file
            self._lost_counted += lost
            self.frontier.note("items", -lost)
            self.frontier.note("items/lost", lost)

    def linger(self, expected_workers: int, timeout_s: float) -> None:
        """After the end, give workers time to learn it and say goodbye."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alive = self.frontier.status()["workers"]
            if alive == 0 or len(self.service.goodbyes) >= expected_workers:
                return
            time.sleep(0.05)

    def _commit(self) -> bool:
        """Write the frontier's changes and the matching feed offsets to the job dir, once
        the feeds hold the bytes before those offsets durably (fdatasync). If either cannot
        be done, the changes go back to the frontier for the next commit. Returns whether
        it committed: not once a feed's sync has failed (the job dir then keeps its last
        commit, which a resume can trust).

        Raises:
            sqlite3.Error, OSError: the journal cannot be written (its disk is full, say).
        """
        assert self.journal is not None
        ops, offsets, stats, spider_stats, state, reason = self.frontier.checkpoint(
            self.feed.offsets
        )
        meta = {
            "spider": self.spider_cls.name,
            "feeds": json.dumps(offsets),
            "stats": json.dumps(stats),
            "spider_stats": json.dumps(spider_stats),
            "state": state,
            "close_reason": reason,
        }
        try:
            if not self.feed.sync():
                self.frontier.uncheckpoint(ops)
                return False
            self.journal.commit(ops, meta)
        except BaseException:
            self.frontier.uncheckpoint(ops)
            raise
        self._committed_at = time.monotonic()
        return True

    def _try_commit(self) -> bool:
        """``_commit``; a journal that cannot be written closes the crawl as
        ``journal_error`` and is retried by the next call."""
        try:
            return self._commit()
        except (OSError, sqlite3.Error) as exc:  # a full disk, an I/O error
            if self._journal_error is None:
                logger.error(
                    "cannot write the job dir %s (%s): closing the crawl; every change is "
                    "kept and written by the next commit that succeeds",
                    self.config.job_dir,
                    exc,
                )
                self._journal_error = str(exc.strerror if isinstance(exc, OSError) else exc)
            self.frontier.close("journal_error")
            return False

    def _commit_loop(self, every_s: float = 0.2) -> None:
        assert self._server is not None
        while not self._server.stop_event.wait(every_s):
            try:
                self._try_commit()
            except Exception:  # a bug, not the disk: say so with its traceback, and retry
                logger.exception("cannot write the job journal; will retry")

    def stop(self) -> None:
        """Stop serving, write the last changes to the job dir and close the feeds. A feed
        or a job dir that cannot be written is logged and reported by ``problems``, never
        raised: the summary is printed whatever the disk does."""
        if self._feeder is not None:
            self._feeder.stop()
        if self._server is not None:
            self._server.stop()
        if self._committer is not None:
            self._committer.join()
        self._flush_feeds()  # before the last commit, which records the stats
        if self.journal is not None:
            self._job_current = self._try_commit()  # the last changes, and the final state
            try:
                self.journal.close()
            except sqlite3.Error as exc:
                logger.error("cannot close the job dir %s: %s", self.config.job_dir, exc)
        try:
            self.feed.close()
        except OSError as exc:
            logger.error("cannot close the feed (%s)", exc)
        self._flush_feeds()  # what closing lost (it cannot, after a good flush) is counted

    def problems(self) -> list[str]:
        """After ``stop``: why the feeds or the job dir do not hold the whole crawl, one
        message for each that failed, naming its path; the last says what to do. Empty if
        nothing failed."""
        job = str(self.config.job_dir)
        failures = []
        failure = self.feed.failure
        if failure is not None:
            name, exc = failure
            where = "to standard output" if name == "standard output" else repr(name)
            failures.append(f"cannot write the feed {where}: {exc.strerror or exc}")
        if self._journal_error is not None:
            failures.append(f"cannot write the job dir {job!r}: {self._journal_error}")
        if not failures:
            return []
        if self.journal is None:
            then = "the feeds hold the items counted; without --job-dir the crawl cannot resume"
        elif self._job_current:
            then = (
                f"job dir {job!r} holds the rest of the crawl: make room and run the same "
                "command again to resume"
            )
        else:
            then = (
                f"job dir {job!r} holds the crawl as of its last commit, "
                f"{time.monotonic() - self._committed_at:.1f}s before the end: make room and "
                "run the same command again to resume (what was crawled since is crawled "
                "again, and the feeds are cut back to match)"
            )
        return [*failures[:-1], f"{failures[-1]}; {then}"]
