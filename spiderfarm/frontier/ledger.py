"""What becomes of each request, from its push to its end: dedup and scope, robots.txt
admission, the outcomes workers report, retries with backoff, reclaimed leases, dead
letters, and the journal ops that record it all.

No lock here: the frontier calls all of this under its own.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from ..politeness import ROBOTS_CALLBACK, Admission, Robots, Throttle, origin_of, robots_wire
from ..protocol import (
    MAX_SPIDER_STATS,
    W_CALLBACK,
    W_DEPTH,
    W_DONT_FILTER,
    W_META,
    W_URL,
    Outcome,
    PushEntry,
    WireRequest,
    read_notes,
    read_stat_notes,
    retries_allowed,
    split_errback_notes,
)
from ..settings import Settings
from ..urls import host_allowed, host_of
from .hosts import Host, Scheduler
from .leases import Leased, Leases, Worker
from .limits import Limits
from .results import Results

logger = logging.getLogger("spiderfarm.frontier")

__all__ = ["Ledger"]

#: The most distinct counters the crawl's stats hold (workers' notes name some of them).
MAX_COUNTERS = 10_000

#: The counter of each request robots.txt drops.
_DROPPED: Final[dict[Admission, str]] = {
    "drop_robots": "filtered/robots",
    "drop_unavailable": "filtered/robots_unavailable",
}


def _is_robots(rid: int, wire: WireRequest) -> bool:
    """A robots.txt request (request id 0: not journaled, not a page)."""
    return not rid and wire[W_CALLBACK] == ROBOTS_CALLBACK


class Ledger:
    """Every request the crawl accepted, and what each outcome does to it.

    Request ids (``next_rid``) are the journal's keys; ``journal`` records each change
    (``add``, ``attempt``, ``done``, ``dead``) for the next checkpoint.
    """

    __slots__ = (
        "_allowed", "_hosts", "_journal", "_leases", "_limits", "_robots", "_scheduler",
        "_settings", "_settled", "_stats", "_throttle", "dead_letters", "next_rid", "results",
        "roots", "seen", "spider_stats",
    )  # fmt: skip

    def __init__(
        self,
        settings: Settings,
        allowed_domains: Iterable[str],
        throttle: Throttle,
        scheduler: Scheduler,
        leases: Leases,
        limits: Limits,
        stats: Counter[str],
        journal: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self._settings = settings
        self._allowed = frozenset(d.lower().lstrip(".") for d in allowed_domains)
        self._throttle = throttle
        self._scheduler = scheduler
        self._hosts = scheduler.hosts
        self._leases = leases
        self._limits = limits
        self._stats = stats
        self._journal = journal
        # robots.txt per origin, when obeyed. Robots requests use request id 0: they are
        # not journaled (a resumed crawl fetches robots.txt again) and not pages.
        self._robots = Robots(settings.user_agent, settings.max_retries) if (
            settings.obey_robots
        ) else None  # fmt: skip
        self._settled = -1  # the request id an outcome last settled (see apply)
        self.seen: set[int] = set()
        self.next_rid = 1
        self.dead_letters: list[tuple[str, str, int]] = []
        # Service mode: the submitted URL each request descends from, by request id, for
        # requests not finished yet, and where their results go (None: not serving).
        self.roots: dict[int, str] = {}
        self.results: Results | None = None
        #: The spiders' own stats (``spider.stats``), merged from every worker's notes.
        self.spider_stats: dict[str, float] = {}

    # -- requests in ---------------------------------------------------------------
    def push(
        self,
        entries: Sequence[PushEntry],
        refused: list[tuple[PushEntry, str]] | None = None,
        root: str | None = None,
    ) -> int:
        """Queue new requests; returns how many were accepted. With ``refused``, each
        entry filtered out is added to it with the counter that says why; with ``root``
        (service mode), the accepted ones descend from that submitted URL."""
        # Accepted even while closing: a stopped crawl keeps the links its last pages
        # found, so that a resumed one (--job-dir) misses nothing.
        seen, allowed, depth_limit = self.seen, self._allowed, self._settings.depth_limit
        # allowed_domains is about the URL's host; with the host policy that is the key.
        key_is_host = self._settings.politeness_key == "host"
        stats, journal = self._stats, self._journal
        # Without robots.txt every request is queued at once: no admit call (hot path).
        scheduler = self._scheduler if self._robots is None else None
        accepted = 0
        for entry in entries:
            fp, host, wire = entry
            if allowed and not host_allowed(host if key_is_host else host_of(wire[W_URL]), allowed):
                stats["filtered/offsite"] += 1
                if refused is not None:
                    refused.append((entry, "filtered/offsite"))
                continue
            if depth_limit and wire[W_DEPTH] > depth_limit:
                stats["filtered/depth"] += 1
                if refused is not None:
                    refused.append((entry, "filtered/depth"))
                continue
            if not wire[W_DONT_FILTER]:
                if fp in seen:
                    stats["filtered/duplicate"] += 1
                    if refused is not None:
                        refused.append((entry, "filtered/duplicate"))
                    continue
                seen.add(fp)
            rid = self.next_rid
            self.next_rid += 1
            journal(("add", rid, fp, host, wire))
            if root is not None:
                self.roots[rid] = root
                journal(("root", rid, root))
            if scheduler is not None:
                scheduler.enqueue(host, rid, wire, 0)
            else:
                self.admit(rid, host, wire, 0)
            accepted += 1
        stats["requests/queued"] += accepted
        return accepted

    def admit(self, rid: int, key: str, wire: WireRequest, attempt: int) -> None:
        """Queue a request, or hold it until its origin's robots.txt is known."""
        if self._robots is None:
            self._scheduler.enqueue(key, rid, wire, attempt)
            return
        url = wire[W_URL]
        admission = self._robots.admit(url)
        if admission == "queue":
            self._scheduler.enqueue(key, rid, wire, attempt)
        elif admission in ("hold", "fetch_robots"):
            if admission == "fetch_robots":
                self._scheduler.enqueue(key, 0, robots_wire(origin_of(url)), 0)
            self._robots.hold(url, (rid, key, wire, attempt))
            self._scheduler.hold()
        else:
            reason = _DROPPED[admission]
            self._stats[reason] += 1
            self._journal(("done", rid))
            root = self.roots.pop(rid, None) if self.roots else None
            if root == url:  # a submitted request; links a page found give no result here
                self._result(root, wire, False, 0, reason, [])

    def restore(
        self,
        fingerprints: Iterable[int],
        queued: Iterable[tuple[int, str, WireRequest, int]],
        roots: Iterable[tuple[int, str]] = (),
    ) -> None:
        """Load a journal's seen set, queue and (service mode) roots."""
        self.seen.update(fingerprints)
        self.roots.update(roots)
        last = 0
        for rid, host, wire, attempt in queued:
            self.admit(rid, host, wire, attempt)
            last = max(last, rid)
        self.next_rid = max(self.next_rid, last + 1)

    # -- service mode ------------------------------------------------------------------
    def submit(self, entries: Sequence[PushEntry]) -> tuple[list[str], list[tuple[str, str]]]:
        """Queue requests a client submitted, each the root of the results it leads to;
        returns the URLs accepted, and (url, reason) for each filtered out (which has its
        result already)."""
        refused: list[tuple[PushEntry, str]] = []
        accepted: list[str] = []
        for entry in entries:  # each its own root
            url = entry[2][W_URL]
            if self.push((entry,), refused, url):
                accepted.append(url)
        for (_, _, wire), reason in refused:
            self._result(wire[W_URL], wire, False, 0, reason, [])
        return accepted, [(wire[W_URL], reason) for (_, _, wire), reason in refused]

    def _end(
        self, rid: int, wire: WireRequest, ok: bool, status: int, reason: str | None,
        items: list[str],
    ) -> str | None:  # fmt: skip
        """A request has finished: its result, if it descends from a submitted one.
        Returns its root (None if it has none)."""
        root = self.roots.pop(rid, None)
        if root is not None:
            self._result(root, wire, ok, status, reason, items)
        return root

    def _result(
        self, root: str, wire: WireRequest, ok: bool, status: int, reason: str | None,
        items: list[str],
    ) -> None:  # fmt: skip
        if self.results is not None:
            self.results.put((wire[W_URL], ok, status or None, reason, items, wire[W_META], root))

    def _robots_result(
        self, key: str, wire: WireRequest, reason: str, text: str, now: float
    ) -> None:
        assert self._robots is not None
        self._stats[f"robots/{reason}"] += 1
        retry, crawl_delay, released = self._robots.settle(wire[W_URL], reason, text)
        if crawl_delay is not None:
            cap = self._settings.max_crawl_delay_s
            if self._hosts[key].obey_crawl_delay(crawl_delay, cap, now):
                logger.warning(
                    "%s asks for a Crawl-delay of %.6g s; using max_crawl_delay_s=%g",
                    key, crawl_delay, cap,
                )  # fmt: skip
                self._stats["robots/crawl_delay_capped"] += 1
        if retry:
            self._retry_later(key, 0, wire, retry, now, 0.0)
            return
        self._scheduler.unhold(len(released))
        for rid, host_key, held_wire, attempt in released:
            self.admit(rid, host_key, held_wire, attempt)

    # -- outcomes ------------------------------------------------------------------
    def apply(self, worker: Worker, outcome: Outcome, now: float) -> bool:
        """Apply one outcome; False if its lease is not (or no longer) ``worker``'s.

        An unexpected error costs only this outcome's request: it is retried (or
        dead-lettered as ``bad_outcome``) and the frontier stays consistent."""
        lease = self._leases.settle(worker, outcome[0])
        if lease is None:
            self._stats["acks/refused"] += 1
            return False
        _, rid, wire, attempt, _, key = lease
        host = self._hosts[key]
        host.in_flight -= 1
        self._settled = -1
        try:
            self._apply(lease, host, outcome, now)
        except Exception:
            logger.exception("worker %s: cannot apply the outcome for %s", lease[0], wire[W_URL])
            stats = self._stats
            stats["errors/bad_outcome"] += 1
            if self._settled == rid:
                pass  # it was settled (done, requeued) before the error: nothing is lost
            elif _is_robots(rid, wire):
                self._robots_result(key, wire, "unavailable", "", now)
            elif attempt < self._settings.max_retries:
                stats["retries/bad_outcome"] += 1
                self._retry_later(key, rid, wire, attempt + 1, now, 0.0)
            else:
                host.errors += 1
                stats["failed/bad_outcome"] += 1
                self._dead_letter(rid, wire, "bad_outcome", attempt + 1)
                self._end(rid, wire, False, 0, "bad_outcome", [])
            self._scheduler.schedule(key, host, now)
        return True

    def _apply(self, lease: Leased, host: Host, outcome: Outcome, now: float) -> None:
        worker, rid, wire, attempt, _, key = lease
        _, kind, reason, new_requests, items, info = outcome
        notes = ""
        if kind in ("fail", "retry"):  # an errback's notes ride after the reason
            reason, notes = split_errback_notes(reason)
        leased_at = lease[4] - self._settings.lease_timeout_s  # its deadline: leased + timeout
        host.answered(kind, reason, info, now, self._throttle, leased_at)
        stats = self._stats
        if kind == "release":
            if attempt == 0 and rid:  # handed back unstarted: not a page against max_pages
                self._limits.handed_out -= 1
            self._requeue(key, rid, wire, attempt, now, 0.0)
        elif _is_robots(rid, wire):
            if kind == "robots":
                self._robots_result(key, wire, reason, items[0] if items else "", now)
            else:  # it ended another way (a middleware raised, say): settle the origin
                self._bad_kind(worker, kind, wire)
                self._robots_result(key, wire, "unavailable", "", now)
        elif kind == "robots":  # a page lease reported as robots.txt: a confused worker
            self._bad_kind(worker, kind, wire)
            host.errors += 1
            stats["failed/bad_outcome"] += 1
            self._done(rid)
            self._end(rid, wire, False, 0, "bad_outcome", [])
        elif kind in ("fail", "retry"):
            self._apply_failure(key, host, rid, wire, attempt, kind, reason, outcome, now)
            if notes:
                self._count_notes(notes)
        else:
            final = info[3] if len(info) == 4 and not wire[W_DONT_FILTER] else 0
            if final and final in self.seen:
                # Its redirects ended at a URL the crawl has (or will have) as a page of its
                # own: a second copy of that page, dropped as Scrapy's dupefilter would.
                host.pages += 1
                stats["pages"] += 1
                stats["filtered/redirect_duplicate"] += 1
                self._done(rid)
                self._scheduler.schedule(key, host, now)
                return
            if items and not self._limits.write(items):
                # Not written (disk full): the page is not done; a resumed job fetches it.
                self._requeue(key, rid, wire, attempt, now, 0.0)
                self._scheduler.schedule(key, host, now)
                return
            if final:
                self.seen.add(final)
                self._journal(("seen", final))
            if kind != "skip":  # skip: a middleware ignored or replaced it, nothing fetched
                host.pages += 1
                stats["pages"] += 1
                self._leases.workers[worker].pages += 1
            self._done(rid)
            root = None
            if self.roots:  # service mode: a skipped request (a middleware's doing) is not ok
                skipped = kind == "skip"
                root = self._end(
                    rid, wire, not skipped, info[0], "skipped" if skipped else None, items
                )
            if kind == "close":  # a callback raised CloseSpider(reason)
                self._limits.close(reason)
            elif reason:  # counters the worker noted: "callback_error,items/dropped*20"
                self._count_notes(reason)
            if new_requests:
                self.push(new_requests, None, root)
        self._scheduler.schedule(key, host, now)

    def _apply_failure(
        self,
        key: str,
        host: Host,
        rid: int,
        wire: WireRequest,
        attempt: int,
        kind: str,
        reason: str,
        outcome: Outcome,
        now: float,
    ) -> None:
        new_requests, items, info = outcome[3], outcome[4], outcome[5]
        stats = self._stats
        if kind == "retry" and attempt < retries_allowed(wire[W_META], self._settings.max_retries):
            stats[f"retries/{reason}"] += 1
            self._retry_later(key, rid, wire, attempt + 1, now, info[2])
        else:
            host.errors += 1
            stats[f"failed/{reason}"] += 1
            if kind == "retry":
                self._dead_letter(rid, wire, reason, attempt + 1)
            else:
                self._done(rid)
            root = self._end(rid, wire, False, info[0], reason, items) if self.roots else None
            # An errback's output travels with the final failure.
            if new_requests:
                self.push(new_requests, None, root)
            if items:
                self._limits.write(items)

    def _count_notes(self, notes: str) -> None:
        """Counters a worker noted for one page: ``callback_error,items/dropped*20``, and
        the spider's stats riding with them (``$+key:1``). New names past the caps are
        dropped and counted: a hostile worker cannot grow the server without bound."""
        stats = self._stats
        for name, count in read_notes(notes):
            if name in stats or len(stats) < MAX_COUNTERS:
                stats[name] += count
            else:
                stats["errors/counters_dropped"] += 1
        if "$" in notes:
            self.merge_spider_stats(notes)

    def robots_states(self) -> dict[str, str]:
        """robots.txt's state by ``host:port`` (empty when robots.txt is not obeyed)."""
        return self._robots.states() if self._robots is not None else {}

    def merge_spider_stats(self, notes: str) -> None:
        """Merge spider stats notes (``protocol.read_stat_notes``) into ``spider_stats``."""
        merged = self.spider_stats
        for op, key, value in read_stat_notes(notes):
            old = merged.get(key)
            if old is None:
                if len(merged) >= MAX_SPIDER_STATS:
                    self._stats["errors/spider_stats_dropped"] += 1
                    continue
                merged[key] = value
            elif op == "+":
                merged[key] = old + value
            elif op == "=":
                merged[key] = value
            elif op == ">":
                merged[key] = max(old, value)
            elif op == "<":
                merged[key] = min(old, value)
            # "~" (a start value) sets only a key not set yet

    def _bad_kind(self, worker: str, kind: str, wire: WireRequest) -> None:
        self._stats["acks/bad_kind"] += 1
        logger.warning("worker %s: outcome %r on %s", worker, kind, wire[W_URL])

    # -- reclaimed leases ----------------------------------------------------------
    def reclaim(self, lease_ids: list[int], now: float) -> None:
        """Take back these leases (those still out) and requeue their requests."""
        for lease_id in lease_ids:
            lease = self._leases.revoke(lease_id)
            if lease is None:
                continue
            _, rid, wire, attempt, _, key = lease
            host = self._hosts[key]
            host.in_flight -= 1
            self._stats["leases/reclaimed"] += 1
            if _is_robots(rid, wire):
                self._robots_result(key, wire, "unavailable", "", now)
            # A reclaimed request may have been what killed its worker: count it as an attempt.
            elif attempt < self._settings.max_retries:
                self._requeue(key, rid, wire, attempt + 1, now, 0.0)
            else:
                self._stats["failed/worker_lost"] += 1
                self._dead_letter(rid, wire, "worker_lost", attempt + 1)
                self._end(rid, wire, False, 0, "worker_lost", [])
            self._scheduler.schedule(key, host, now)

    # -- how a request ends, or goes round again -----------------------------------
    def _done(self, rid: int) -> None:
        self._settled = rid
        self._journal(("done", rid))

    def _requeue(
        self, key: str, rid: int, wire: WireRequest, attempt: int, now: float, delay: float
    ) -> None:
        self._settled = rid
        # Requeued even while closing: a stopped crawl keeps its queue for --job-dir.
        if attempt:
            self._journal(("attempt", rid, attempt))
        if delay > 0:
            self._scheduler.enqueue_at(now + delay, key, rid, wire, attempt)
        else:
            self._scheduler.enqueue(key, rid, wire, attempt)

    def _retry_later(
        self, key: str, rid: int, wire: WireRequest, attempt: int, now: float, retry_after: float
    ) -> None:
        s = self._settings
        backoff = s.retry_backoff_s * 2 ** (attempt - 1)
        backoff *= random.uniform(0.5, 1.5)  # jitter: retries of one outage do not stampede
        # Retry-After may ask for longer than the backoff, but never past the longest delay.
        wait = min(max(backoff, retry_after), s.retry_backoff_max_s)
        self._requeue(key, rid, wire, attempt, now, wait)

    def _dead_letter(self, rid: int, wire: WireRequest, reason: str, attempts: int) -> None:
        self._settled = rid
        self.dead_letters.append((wire[W_URL], reason, attempts))
        self._stats["dead_letters"] += 1
        self._journal(("dead", rid, wire[W_URL], reason, attempts))
