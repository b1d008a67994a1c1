"""The crawl's life and what ends it: its state, ``max_pages``, ``max_items`` (and the
feed the items go to), ``max_seconds``, a close asked for, and the start stream's demand.

No lock here: the frontier calls all of this under its own.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from ..protocol import CLOSING, FINISHED, RUNNING, State
from ..settings import Settings
from .hosts import Scheduler

logger = logging.getLogger("spiderfarm.frontier")

__all__ = ["Limits"]


class Limits:
    """Whether the crawl runs, closes or has finished, and why.

    ``handed_out`` counts the pages leased, against ``max_pages``. The start requests are
    a stream (start.py): the crawl is not over while it has more (``starting``), and the
    feeder is woken (``start_wanted``) when the queue runs below ``start_low``. A
    ``serving`` crawl (``--serve``) does not finish when its queue empties: it waits for
    submitted work, and closes as ``idle_close`` after ``idle_close_s`` with nothing
    queued or leased (``idle_since``), if that is set. ``finished`` is set when the crawl
    has finished, for whoever waits for the end.
    """

    __slots__ = (
        "_settings", "_stats", "_write_items", "close_reason", "finished", "finished_at",
        "handed_out", "idle_since", "serving", "start_low", "start_wanted", "started_at",
        "starting", "state",
    )  # fmt: skip

    def __init__(
        self,
        settings: Settings,
        stats: Counter[str],
        write_items: Callable[[list[str]], None],
        now: float,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._write_items = write_items
        self.state: State = RUNNING
        self.close_reason = ""
        self.started_at = now
        self.finished_at = 0.0
        self.handed_out = 0
        self.starting = False
        self.serving = False
        self.idle_since: float | None = None
        self.start_low = 0
        self.start_wanted = threading.Event()
        self.finished = threading.Event()

    def close(self, reason: str) -> None:
        """Stop handing out work (the first reason given is the crawl's)."""
        if self.state == RUNNING:
            logger.info("closing crawl: %s", reason)
            self.state = CLOSING
            self.close_reason = reason
            self.start_wanted.set()  # the start feeder stops reading

    def page_room(self, want: int) -> int:
        """How many new pages may be leased now, of ``want``."""
        max_pages = self._settings.max_pages
        return max_pages - self.handed_out if max_pages else want

    def start_room(self, target: int, queued: int) -> int:
        """How many more start requests to read now (see ``Frontier.start_room``)."""
        self.start_low = target // 2
        limit = self._settings.max_pages
        if self.state != RUNNING or (limit and self.handed_out >= limit):
            return 0
        return target - queued

    def want_starts(self, queued: int) -> None:
        """Wake the start feeder if the queue is running low."""
        if self.starting and queued < self.start_low:
            self.start_wanted.set()

    def write(self, items: list[str]) -> bool:
        """Write ``items`` (up to max_items); False if the feed could not take them."""
        stats = self._stats
        max_items = self._settings.max_items
        if max_items:
            room = max_items - stats["items"]
            if room <= 0:
                stats["items/over_limit"] += len(items)
                self.close("max_items")  # already reached: by a resumed job's earlier run
                return True
            if len(items) >= room:
                stats["items/over_limit"] += len(items) - room
                items = items[:room]
                self.close("max_items")
        try:
            self._write_items(items)
        except OSError as exc:  # disk full, say: no crawl can go on, but none is lost mid-ack
            if self.state == RUNNING:
                logger.error("cannot write items to the feed (%s): closing the crawl", exc)
            stats["items/write_errors"] += len(items)
            self.close("feed_error")
            return False
        stats["items"] += len(items)
        return True

    def check_deadline(self, now: float) -> None:
        limit = self._settings.max_seconds
        if limit and self.state == RUNNING and now - self.started_at >= limit:
            self.close("max_seconds")

    def check_finished(self, now: float, leased: int, scheduler: Scheduler) -> None:
        """Finish the crawl if nothing is ``leased`` and nothing more is to come."""
        if self.state == FINISHED:
            return
        self.check_deadline(now)
        if leased:
            self.idle_since = None
            return
        limit = self._settings.max_pages
        if limit and self.handed_out >= limit and not scheduler.owed and not scheduler.delayed:
            self.close("max_pages")  # every page handed out is done, and nothing is owed
        if self.serving and self.state == RUNNING:
            self._check_idle(now, scheduler.queued == 0 and not self.starting)
        if self.state == CLOSING or (
            scheduler.queued == 0 and not self.starting and not self.serving
        ):
            self.state = FINISHED
            self.close_reason = self.close_reason or "finished"
            self.finished_at = now
            self.start_wanted.set()  # the feeder, if waiting, learns the crawl is over
            self.finished.set()
        elif self.starting and scheduler.queued < self.start_low:
            self.start_wanted.set()

    def _check_idle(self, now: float, idle: bool) -> None:
        """Service mode: close after ``idle_close_s`` idle, if it is set."""
        if not idle:
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        limit = self._settings.idle_close_s
        if limit and now - self.idle_since >= limit:
            self.close("idle_close")

    def restore(self) -> None:
        """Count what a resumed job's earlier runs did (their stats are loaded)."""
        stats = self._stats
        # Pages finished before the restart count against max_pages; those in flight
        # at the crash were journalled as queued and count when leased again.
        self.handed_out = stats["pages"] + sum(
            n for name, n in stats.items() if name.startswith("failed/")
        )
        max_items = self._settings.max_items
        if max_items and stats["items"] >= max_items:
            self.close("max_items")  # the earlier run wrote them all
