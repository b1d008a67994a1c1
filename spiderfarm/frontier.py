"""The crawl state: per-host queues, dedup, leases, retries, dead letters, limits.

A plain object guarded by one lock (the manager serves every connection on its own
thread). No sockets and no pickling here: ``server.py`` exposes it, ``worker.py`` feeds it.

Protocol (all plain data):

* ``push([(fp, host, wire), ...])`` queues new requests, dropping seen fingerprints,
  offsite hosts and requests past the depth limit.
* ``exchange(worker, outcomes, want)`` applies a batch of outcomes atomically and leases
  up to ``want`` new requests in the same round trip. An outcome is
  ``(lease_id, kind, reason, new_requests, items, info)`` with ``kind`` one of
  ``ok``, ``skip`` (done, not fetched), ``close``, ``fail``, ``retry``,
  ``release`` or ``robots``; items are JSON lines.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .politeness import (
    CONNECTION_FAILURES,
    ROBOTS_CALLBACK,
    Origin,
    Throttle,
    origin_of,
    robots_wire,
)
from .protocol import (
    CLOSING,
    FINISHED,
    RUNNING,
    W_CALLBACK,
    W_DEPTH,
    W_DONT_FILTER,
    W_PRIORITY,
    W_URL,
    Lease,
    Outcome,
    PushEntry,
    WireRequest,
    read_notes,
    split_errback_notes,
)
from .settings import Settings
from .urls import host_allowed, host_of

logger = logging.getLogger(__name__)

__all__ = ["Frontier", "Lease", "Outcome", "PushEntry"]

_T = TypeVar("_T")  # what the server's feeds report as their offsets

#: How far back a throttled (not fixed-delay) host may bank unused request starts.
BURST_S = 0.25


class _Host:
    __slots__ = (
        "asked", "buckets", "delay", "errors", "failures", "floor", "in_flight", "next_at", "owed",
        "pages", "prios", "scheduled",
    )  # fmt: skip

    def __init__(self) -> None:
        # Priority buckets: most crawls use one priority, so a deque beats a heap.
        self.buckets: dict[int, deque[tuple[int, WireRequest, int]]] = {}
        self.prios: list[int] = []  # ascending; the highest is taken first
        # Work already started once (retries, reclaimed leases) and robots.txt: taken
        # before new requests, and still handed out when max_pages stops new ones.
        self.owed: deque[tuple[int, WireRequest, int]] = deque()
        self.in_flight = 0
        self.next_at = 0.0
        self.scheduled = False
        self.pages = 0
        self.errors = 0
        self.delay = 0.0  # current gap between request starts (politeness.Throttle)
        self.floor = 0.0  # robots.txt Crawl-delay
        self.asked = 0.0  # a Crawl-delay over max_crawl_delay_s, as asked (0: none)
        self.failures = 0  # connection failures in a row

    def put(self, rid: int, wire: WireRequest, attempt: int) -> bool:
        """Queue one request; True if it is owed work (see ``owed``)."""
        if attempt or not rid:
            self.owed.append((rid, wire, attempt))
            return True
        prio = wire[W_PRIORITY]
        bucket = self.buckets.get(prio)
        if bucket is None:
            bucket = self.buckets[prio] = deque()
            bisect.insort(self.prios, prio)
        bucket.append((rid, wire, attempt))
        return False

    def take(self) -> tuple[int, WireRequest, int]:
        if self.owed:
            return self.owed.popleft()
        prio = self.prios[-1]
        bucket = self.buckets[prio]
        entry = bucket.popleft()
        if not bucket:
            del self.buckets[prio]
            self.prios.pop()
        return entry

    def __bool__(self) -> bool:
        return bool(self.prios or self.owed)


def _is_robots(rid: int, wire: WireRequest) -> bool:
    """A robots.txt request (request id 0: not journaled, not a page)."""
    return not rid and wire[W_CALLBACK] == ROBOTS_CALLBACK


@dataclass(slots=True)
class _Worker:
    last_seen: float
    leases: set[int]
    alive: bool = True
    lag_s: float = 0.0  # how late the worker's event loop was at its last heartbeat


class Frontier:
    """The whole crawl's state. Thread-safe; every public method takes the lock once."""

    def __init__(
        self,
        settings: Settings,
        allowed_domains: Iterable[str] = (),
        write_items: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        journaled: bool = False,
    ) -> None:
        self.settings = settings
        self._allowed = frozenset(d.lower().lstrip(".") for d in allowed_domains)
        self._write_items = write_items or (lambda lines: None)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: set[int] = set()
        self._hosts: dict[str, _Host] = {}
        self._ready: deque[str] = deque()
        self._waiting: list[tuple[float, str]] = []  # (next_at, host): politeness delay
        # retries waiting for their backoff: (ready_at, seq, host, rid, wire, attempt)
        self._delayed: list[tuple[float, int, str, int, WireRequest, int]] = []
        self._queued = 0
        # lease_id -> (worker, rid, wire, attempt, deadline, host)
        self._leases: dict[int, tuple[str, int, WireRequest, int, float, str]] = {}
        self._deadlines: list[float] = []
        self._workers: dict[str, _Worker] = {}
        # Lease ids start at a random point so that an ack from before a server restart
        # can never match a lease handed out after it.
        self._next_lease = random.getrandbits(40) << 20
        self._next_rid = 1  # request ids, the journal's keys
        self._ops: list[tuple[Any, ...]] | None = [] if journaled else None
        self._throttle = Throttle(settings)
        self._per_host = settings.per_host_concurrency
        # robots.txt per origin, when obeyed. Robots requests use request id 0: they are
        # not journaled (a resumed crawl fetches robots.txt again) and not pages.
        self._robots: dict[str, Origin] | None = {} if settings.obey_robots else None
        self._seq = 0
        self._settled = -1  # the request id an outcome last settled (see _apply_safely)
        self._handed_out = 0
        self._owed = 0  # queued entries in the hosts' owed deques
        # The start requests are a stream (start.py): the crawl is not over while it has
        # more, and the feeder is woken when the queue runs low.
        self._starting = False
        self._start_low = 0
        self.start_wanted = threading.Event()
        self.stats: Counter[str] = Counter()
        self.dead_letters: list[tuple[str, str, int]] = []
        self.state = RUNNING
        self.close_reason = ""
        self.started_at = clock()
        self.finished_at = 0.0

    # -- requests in ---------------------------------------------------------------
    def push(self, entries: Sequence[PushEntry]) -> int:
        """Queue new requests; returns how many were accepted."""
        with self._lock:
            return self._push(entries)

    def _push(self, entries: Sequence[PushEntry]) -> int:
        # Accepted even while closing: a stopped crawl keeps the links its last pages
        # found, so that a resumed one (--job-dir) misses nothing.
        seen, allowed, depth_limit = self._seen, self._allowed, self.settings.depth_limit
        # allowed_domains is about the URL's host; with the host policy that is the key.
        key_is_host = self.settings.politeness_key == "host"
        stats = self.stats
        accepted = 0
        for fp, host, wire in entries:
            if allowed and not host_allowed(host if key_is_host else host_of(wire[W_URL]), allowed):
                stats["filtered/offsite"] += 1
                continue
            if depth_limit and wire[W_DEPTH] > depth_limit:
                stats["filtered/depth"] += 1
                continue
            if not wire[W_DONT_FILTER]:
                if fp in seen:
                    stats["filtered/duplicate"] += 1
                    continue
                seen.add(fp)
            rid = self._next_rid
            self._next_rid += 1
            if self._ops is not None:
                self._ops.append(("add", rid, fp, host, wire))
            self._admit(rid, host, wire, 0)
            accepted += 1
        stats["requests/queued"] += accepted
        return accepted

    # -- the start stream (start.py) ----------------------------------------------
    def open_start(self) -> None:
        """The start requests are still coming: the crawl may not finish before
        ``end_start``."""
        with self._lock:
            self._starting = True

    def start_room(self, target: int) -> int:
        """How many more start requests to read now: 0 once the crawl is closing or at
        ``max_pages``, else what fills the queue to ``target``."""
        with self._lock:
            self._start_low = target // 2
            limit = self.settings.max_pages
            if self.state != RUNNING or (limit and self._handed_out >= limit):
                return 0
            return target - self._queued

    def end_start(self) -> None:
        """The start stream has ended (or failed, or was stopped)."""
        with self._lock:
            self._starting = False
            self._check_finished(self._clock())

    def write_start_items(self, items: list[str]) -> None:
        """Items that ``start()`` yielded itself, written as an ack writes a page's."""
        with self._lock:
            self._accept_items(items)

    def note(self, name: str, count: int = 1) -> None:
        """Count something that happened outside any request (``errors/start_requests``)."""
        with self._lock:
            self.stats[name] += count

    def _admit(self, rid: int, key: str, wire: WireRequest, attempt: int) -> None:
        """Queue a request, or hold it until its origin's robots.txt is known."""
        if self._robots is None:
            self._enqueue(key, rid, wire, attempt)
            return
        origin = origin_of(wire[W_URL])
        state = self._robots.get(origin)
        if state is None:
            state = self._robots[origin] = Origin()
            self._enqueue(key, 0, robots_wire(origin), 0)
        if state.state in ("pending", "unavailable"):
            state.held.append((rid, key, wire, attempt))
            self._queued += 1
        elif state.state == "failed":
            self._drop(rid, "filtered/robots_unavailable")
        elif state.allows(wire[W_URL], self.settings.user_agent):
            self._enqueue(key, rid, wire, attempt)
        else:
            self._drop(rid, "filtered/robots")

    def _drop(self, rid: int, reason: str) -> None:
        self.stats[reason] += 1
        if self._ops is not None:
            self._ops.append(("done", rid))

    def _robots_result(
        self, key: str, wire: WireRequest, reason: str, text: str, now: float
    ) -> None:
        assert self._robots is not None
        origin = self._robots[origin_of(wire[W_URL])]
        self.stats[f"robots/{reason}"] += 1
        if reason == "ok":
            origin.load(text)
            host = self._hosts[key]
            asked = origin.crawl_delay(self.settings.user_agent)
            cap = self.settings.max_crawl_delay_s
            if asked > cap:  # a hostile or mistaken Crawl-delay: 1e9 would stall the host
                logger.warning(
                    "%s asks for a Crawl-delay of %.6g s; using max_crawl_delay_s=%g",
                    key, asked, cap,
                )  # fmt: skip
                self.stats["robots/crawl_delay_capped"] += 1
                host.asked = max(host.asked, asked)
                asked = cap
            host.floor = max(host.floor, asked)
            host.delay = max(host.delay, host.floor)
            if host.delay:
                host.next_at = max(host.next_at, now + host.delay)
        elif reason == "missing":
            origin.state = "ready"
        else:
            origin.attempts += 1
            if origin.attempts <= self.settings.max_retries:
                origin.state = "unavailable"  # nothing from this origin until it answers
                self._retry_later(key, 0, wire, origin.attempts, now, 0.0)
                return
            origin.state = "failed"
        held, origin.held = origin.held, []
        self._queued -= len(held)
        for rid, host_key, held_wire, attempt in held:
            self._admit(rid, host_key, held_wire, attempt)

    def _enqueue(self, host_key: str, rid: int, wire: WireRequest, attempt: int) -> None:
        host = self._hosts.get(host_key)
        if host is None:
            host = self._hosts[host_key] = _Host()
            host.delay = self._throttle.min_delay
        if host.put(rid, wire, attempt):
            self._owed += 1
        self._queued += 1
        if not host.scheduled:
            self._schedule(host_key, host, self._clock())

    def _strict(self, host: _Host) -> bool:
        """A fixed delay (delay_s or Crawl-delay) is a promise about every gap."""
        return bool(host.floor or self._throttle.min_delay)

    def _schedule(self, key: str, host: _Host, now: float) -> None:
        # With a fixed delay one request at a time: a worker may start a lease late, so
        # only ack-to-lease spacing can promise the gap.
        if host.scheduled or not (host.prios or host.owed):
            return
        if host.in_flight >= (1 if host.floor or self._throttle.min_delay else self._per_host):
            return
        host.scheduled = True
        if host.next_at > now:
            heapq.heappush(self._waiting, (host.next_at, key))
        else:
            self._ready.append(key)

    # -- leasing -------------------------------------------------------------------
    def exchange(
        self, worker: str, outcomes: Sequence[Outcome], want: int
    ) -> tuple[list[Lease], list[int], str]:
        """Apply ``outcomes``, then lease up to ``want`` requests to ``worker``.

        Returns the new leases, the ids of outcomes refused because their lease was no
        longer this worker's, and the crawl state (``running``/``closing``/``finished``).
        """
        with self._lock:
            now = self._clock()
            state = self._workers.get(worker)
            if state is None:
                state = self._workers[worker] = _Worker(now, set())
            state.last_seen, state.alive = now, True
            refused = [o[0] for o in outcomes if not self._apply_safely(worker, state, o, now)]
            self._reap(now)
            self._check_deadline(now)
            leases = self._lease(worker, state, want, now) if want > 0 else []
            self._check_finished(now)
            return leases, refused, self.state

    def _lease(self, worker: str, state: _Worker, want: int, now: float) -> list[Lease]:
        if self.state != RUNNING:
            return []
        self._promote_delayed(now)
        waiting, ready, hosts = self._waiting, self._ready, self._hosts
        while waiting and waiting[0][0] <= now:
            key = heapq.heappop(waiting)[1]
            if hosts[key].next_at > now:  # an ack pushed this host back meanwhile
                heapq.heappush(waiting, (hosts[key].next_at, key))
            else:
                ready.append(key)
        throttle = self._throttle
        max_pages = self.settings.max_pages
        deadline = now + self.settings.lease_timeout_s
        leases: list[Lease] = []
        at_limit: list[str] = []
        while ready and len(leases) < want:
            key = ready.popleft()
            host = hosts[key]
            if host.next_at > now:  # an ack pushed this host back after it became ready
                heapq.heappush(waiting, (host.next_at, key))
                continue
            if max_pages and self._handed_out >= max_pages and not host.owed:
                # No new pages past the limit; owed work (retries, reclaimed leases,
                # robots.txt) still goes. The crawl closes once none is left and every
                # page handed out is acked (_check_finished): a lease handed back
                # unstarted is leased again, so exactly max_pages pages run.
                at_limit.append(key)
                continue
            host.scheduled = False
            rid, wire, attempt = host.take()
            self._queued -= 1
            if attempt or not rid:
                self._owed -= 1
            else:
                self._handed_out += 1
            lease_id = self._next_lease
            self._next_lease += 1
            self._leases[lease_id] = (worker, rid, wire, attempt, deadline, key)
            state.leases.add(lease_id)
            leases.append((lease_id, attempt, wire))
            host.in_flight += 1
            if host.delay:
                if self._strict(host):
                    host.next_at = now + throttle.gap(host.delay)
                else:
                    # A throttle delay is a rate: a host idle for a while may take a short
                    # burst (bounded by per_host_concurrency), so one exchange can lease
                    # several of its requests while starts still average one per delay.
                    start = max(host.next_at, now - BURST_S)
                    host.next_at = start + throttle.gap(host.delay)
            self._schedule(key, host, now)
        ready.extendleft(reversed(at_limit))
        if leases:
            heapq.heappush(self._deadlines, deadline)
        if self._starting and self._queued < self._start_low:
            self.start_wanted.set()
        return leases

    def _promote_delayed(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, key, rid, wire, attempt = heapq.heappop(delayed)
            self._queued -= 1
            self._enqueue(key, rid, wire, attempt)

    # -- outcomes ------------------------------------------------------------------
    def _apply_safely(self, worker: str, state: _Worker, outcome: Outcome, now: float) -> bool:
        """``_apply``, but an unexpected error costs only this outcome's request: it is
        retried (or dead-lettered as ``bad_outcome``) and the frontier stays consistent."""
        lease = self._leases.get(outcome[0])
        self._settled = -1
        try:
            return self._apply(worker, state, outcome, now)
        except Exception:
            if lease is None or lease[0] != worker:
                raise  # nothing was changed: check_exchange should have refused it
            lease_id, (_, rid, wire, attempt, _, key) = outcome[0], lease
            logger.exception("worker %s: cannot apply the outcome for %s", worker, wire[W_URL])
            self.stats["errors/bad_outcome"] += 1
            host = self._hosts[key]
            if self._leases.pop(lease_id, None) is not None:
                state.leases.discard(lease_id)
                host.in_flight -= 1
            if self._settled == rid:
                pass  # it was settled (done, requeued) before the error: nothing is lost
            elif _is_robots(rid, wire):
                self._robots_result(key, wire, "unavailable", "", now)
            elif attempt < self.settings.max_retries:
                self.stats["retries/bad_outcome"] += 1
                self._retry_later(key, rid, wire, attempt + 1, now, 0.0)
            else:
                host.errors += 1
                self.stats["failed/bad_outcome"] += 1
                self._dead_letter(rid, wire, "bad_outcome", attempt + 1)
            self._schedule(key, host, now)
            return True

    def _done(self, rid: int) -> None:
        self._settled = rid
        if self._ops is not None:
            self._ops.append(("done", rid))

    def _apply(self, worker: str, state: _Worker, outcome: Outcome, now: float) -> bool:
        lease_id, kind, reason, new_requests, items, info = outcome
        lease = self._leases.get(lease_id)
        if lease is None or lease[0] != worker:
            self.stats["acks/refused"] += 1
            return False
        del self._leases[lease_id]
        state.leases.discard(lease_id)
        _, rid, wire, attempt, _, key = lease
        host = self._hosts[key]
        host.in_flight -= 1
        notes = ""
        if kind in ("fail", "retry"):  # an errback's notes ride after the reason
            reason, notes = split_errback_notes(reason)
        self._note_response(host, kind, reason, info, now)
        stats = self.stats
        if kind == "release":
            if attempt == 0 and rid:
                self._handed_out -= 1  # handed back unstarted: not a page against max_pages
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
        elif kind in ("fail", "retry"):
            self._apply_failure(key, host, rid, wire, attempt, kind, reason, outcome, now)
            if notes:
                self._count_notes(notes)
        else:
            if items and not self._accept_items(items):
                # Not written (disk full): the page is not done; a resumed job fetches it.
                self._requeue(key, rid, wire, attempt, now, 0.0)
                self._schedule(key, host, now)
                return True
            if kind != "skip":  # skip: a middleware ignored or replaced it, nothing fetched
                host.pages += 1
                stats["pages"] += 1
            self._done(rid)
            if kind == "close":  # a callback raised CloseSpider(reason)
                self._close(reason)
            elif reason:  # counters the worker noted: "callback_error,items/dropped*20"
                self._count_notes(reason)
            if new_requests:
                self._push(new_requests)
        self._schedule(key, host, now)
        return True

    def _apply_failure(
        self,
        key: str,
        host: _Host,
        rid: int,
        wire: WireRequest,
        attempt: int,
        kind: str,
        reason: str,
        outcome: Outcome,
        now: float,
    ) -> None:
        new_requests, items, info = outcome[3], outcome[4], outcome[5]
        stats = self.stats
        if kind == "retry" and attempt < self.settings.max_retries:
            stats[f"retries/{reason}"] += 1
            self._retry_later(key, rid, wire, attempt + 1, now, info[2])
        else:
            host.errors += 1
            stats[f"failed/{reason}"] += 1
            if kind == "retry":
                self._dead_letter(rid, wire, reason, attempt + 1)
            else:
                self._done(rid)
            # An errback's output travels with the final failure.
            if new_requests:
                self._push(new_requests)
            if items:
                self._accept_items(items)

    def _count_notes(self, notes: str) -> None:
        """Counters a worker noted for one page: ``callback_error,items/dropped*20``."""
        stats = self.stats
        for name, count in read_notes(notes):
            stats[name] += count

    def _bad_kind(self, worker: str, kind: str, wire: WireRequest) -> None:
        self.stats["acks/bad_kind"] += 1
        logger.warning("worker %s: outcome %r on %s", worker, kind, wire[W_URL])

    def _note_response(
        self, host: _Host, kind: str, reason: str, info: tuple[int, float, float], now: float
    ) -> None:
        status, latency, retry_after = info
        # Only a host that does not answer is backed off, not one serving bad pages.
        failed = kind in ("fail", "retry") and reason in CONNECTION_FAILURES
        if not failed and not status:
            # No answer and no connection failure (handed back unstarted, skipped by a
            # middleware, a bad URL): nothing learnt about the host.
            return
        host.failures = host.failures + 1 if failed else 0
        host.delay = self._throttle.update(
            host.delay, host.floor, status, latency, failed, host.failures
        )
        slow_down = status in (429, 503) or (failed and host.failures >= 3)
        if host.delay and (slow_down or self._strict(host)):
            # The worker may have fetched this later than we leased it: count the gap from
            # now as well, so two fetches of one host are never closer than its delay
            # (and a host that asked us to slow down gets its full delay at once).
            host.next_at = max(host.next_at, now + host.delay)
        if retry_after:
            host.next_at = max(host.next_at, now + min(retry_after, self._throttle.max_delay))

    def _accept_items(self, items: list[str]) -> bool:
        """Write ``items`` (up to max_items); False if the feed could not take them."""
        max_items = self.settings.max_items
        if max_items:
            room = max_items - self.stats["items"]
            if room <= 0:
                self.stats["items/over_limit"] += len(items)
                self._close("max_items")  # already reached: by a resumed job's earlier run
                return True
            if len(items) >= room:
                self.stats["items/over_limit"] += len(items) - room
                items = items[:room]
                self._close("max_items")
        try:
            self._write_items(items)
        except OSError as exc:  # disk full, say: no crawl can go on, but none is lost mid-ack
            if self.state == RUNNING:
                logger.error("cannot write items to the feed (%s): closing the crawl", exc)
            self.stats["items/write_errors"] += len(items)
            self._close("feed_error")
            return False
        self.stats["items"] += len(items)
        return True

    def _requeue(
        self, key: str, rid: int, wire: WireRequest, attempt: int, now: float, delay: float
    ) -> None:
        self._settled = rid
        # Requeued even while closing: a stopped crawl keeps its queue for --job-dir.
        if self._ops is not None and attempt:
            self._ops.append(("attempt", rid, attempt))
        if delay > 0:
            self._seq += 1
            heapq.heappush(self._delayed, (now + delay, self._seq, key, rid, wire, attempt))
            self._queued += 1
        else:
            self._enqueue(key, rid, wire, attempt)

    def _dead_letter(self, rid: int, wire: WireRequest, reason: str, attempts: int) -> None:
        self._settled = rid
        self.dead_letters.append((wire[W_URL], reason, attempts))
        self.stats["dead_letters"] += 1
        if self._ops is not None:
            self._ops.append(("dead", rid, wire[W_URL], reason, attempts))

    def _retry_later(
        self, key: str, rid: int, wire: WireRequest, attempt: int, now: float, retry_after: float
    ) -> None:
        s = self.settings
        backoff = s.retry_backoff_s * 2 ** (attempt - 1)
        backoff *= random.uniform(0.5, 1.5)  # jitter: retries of one outage do not stampede
        # Retry-After may ask for longer than the backoff, but never past the longest delay.
        wait = min(max(backoff, retry_after), s.retry_backoff_max_s)
        self._requeue(key, rid, wire, attempt, now, wait)

    # -- liveness ------------------------------------------------------------------
    def _reap(self, now: float) -> None:
        """Requeue the leases of dead workers and leases past their deadline."""
        timeout = self.settings.worker_timeout_s
        for name, worker in self._workers.items():
            if worker.alive and now - worker.last_seen > timeout:
                worker.alive = False
                if worker.leases:
                    logger.warning(
                        "worker %s silent for %.1fs: requeueing its %d leased requests",
                        name,
                        now - worker.last_seen,
                        len(worker.leases),
                    )
                    self.stats["workers/dead"] += 1
                    self._reclaim(list(worker.leases), now)
        # One deadline entry per lease batch; when any passes, scan for what really expired.
        deadlines, due = self._deadlines, False
        while deadlines and deadlines[0] <= now:
            heapq.heappop(deadlines)
            due = True
        if due:
            expired = [i for i, lease in self._leases.items() if lease[4] <= now]
            if expired:
                self.stats["leases/expired"] += len(expired)
                self._reclaim(expired, now)

    def _reclaim(self, lease_ids: list[int], now: float) -> None:
        for lease_id in lease_ids:
            lease = self._leases.pop(lease_id, None)
            if lease is None:
                continue
            worker, rid, wire, attempt, _, key = lease
            self._workers[worker].leases.discard(lease_id)
            host = self._hosts[key]
            host.in_flight -= 1
            self.stats["leases/reclaimed"] += 1
            if _is_robots(rid, wire):
                self._robots_result(key, wire, "unavailable", "", now)
            # A reclaimed request may have been what killed its worker: count it as an attempt.
            elif attempt < self.settings.max_retries:
                self._requeue(key, rid, wire, attempt + 1, now, 0.0)
            else:
                self.stats["failed/worker_lost"] += 1
                self._dead_letter(rid, wire, "worker_lost", attempt + 1)
            self._schedule(key, host, now)

    def tick(self) -> str:
        """Housekeeping when no worker calls: reap, check limits; returns the state."""
        with self._lock:
            now = self._clock()
            self._reap(now)
            self._check_finished(now)
            return self.state

    # -- ending --------------------------------------------------------------------
    def _close(self, reason: str) -> None:
        if self.state == RUNNING:
            logger.info("closing crawl: %s", reason)
            self.state = CLOSING
            self.close_reason = reason
            self.start_wanted.set()  # the start feeder stops reading

    def close(self, reason: str) -> None:
        """Stop handing out work; the crawl finishes once outstanding leases are acked."""
        with self._lock:
            self._close(reason)
            self._check_finished(self._clock())

    def _check_deadline(self, now: float) -> None:
        limit = self.settings.max_seconds
        if limit and self.state == RUNNING and now - self.started_at >= limit:
            self._close("max_seconds")

    def _check_finished(self, now: float) -> None:
        if self.state == FINISHED:
            return
        self._check_deadline(now)
        if self._leases:
            return
        limit = self.settings.max_pages
        if limit and self._handed_out >= limit and not self._owed and not self._delayed:
            self._close("max_pages")  # every page handed out is done, and nothing is owed
        if self.state == CLOSING or (self._queued == 0 and not self._starting):
            self.state = FINISHED
            self.close_reason = self.close_reason or "finished"
            self.finished_at = now
            self.start_wanted.set()  # the feeder, if waiting, learns the crawl is over
        elif self._starting and self._queued < self._start_low:
            self.start_wanted.set()

    def status(self, detail: bool = False) -> dict[str, Any]:
        """A snapshot of plain data for progress lines, ``status`` and the summary;
        ``detail`` adds every host and dead letter (costly on big crawls: not per tick)."""
        with self._lock:
            now = self._clock()
            end = self.finished_at or now
            snapshot: dict[str, Any] = {
                "state": self.state,
                "close_reason": self.close_reason,
                "queued": self._queued,
                "in_flight": len(self._leases),
                "seen": len(self._seen),
                "workers": sum(w.alive for w in self._workers.values()),
                "elapsed_s": end - self.started_at,
                "stats": dict(self.stats),
            }
            if detail:
                snapshot["dead_letters"] = list(self.dead_letters)
                snapshot["worker_detail"] = {
                    name: {
                        "alive": w.alive,
                        "leases": len(w.leases),
                        "last_seen_s": round(now - w.last_seen, 3),
                        "loop_lag_s": round(w.lag_s, 3),
                    }
                    for name, w in self._workers.items()
                }
                snapshot["hosts"] = {
                    key: {
                        "queued": len(h.owed) + sum(len(b) for b in h.buckets.values()),
                        "in_flight": h.in_flight,
                        "pages": h.pages,
                        "errors": h.errors,
                        "delay_s": round(h.delay, 3),
                        "failures": h.failures,
                        **({"crawl_delay_asked_s": h.asked} if h.asked else {}),
                    }
                    for key, h in self._hosts.items()
                }
            return snapshot

    # -- persistence (see journal.py) ---------------------------------------------
    def flush_feed(self, flush: Callable[[], None]) -> None:
        """Run ``flush`` under the lock that item writes hold."""
        with self._lock:
            flush()

    def checkpoint(
        self, feed_offset: Callable[[], _T]
    ) -> tuple[list[tuple[Any, ...]], _T, dict[str, int], str, str]:
        """Take the changes since the last checkpoint, with the feed positions that match
        them exactly: both are read under the lock that every ack holds. The positions are
        read first, so that a ``feed_offset`` that raises takes no changes with it."""
        with self._lock:
            offsets = feed_offset()
            ops, self._ops = self._ops or [], []
            return ops, offsets, dict(self.stats), self.state, self.close_reason

    def uncheckpoint(self, ops: list[tuple[Any, ...]]) -> None:
        """Put back the changes of a checkpoint that could not be written, ahead of any
        made since, so the next checkpoint writes them all (with a later feed offset)."""
        with self._lock:
            self._ops = ops + (self._ops or [])

    def restore(
        self,
        fingerprints: Iterable[int],
        queued: Iterable[tuple[int, str, WireRequest, int]],
        stats: dict[str, int],
        dead_letters: Iterable[tuple[str, str, int]],
    ) -> int:
        """Load a journal's state before any worker connects; returns the queued count."""
        with self._lock:
            self._seen.update(fingerprints)
            last = 0
            for rid, host, wire, attempt in queued:
                self._admit(rid, host, wire, attempt)
                last = max(last, rid)
            self._next_rid = max(self._next_rid, last + 1)
            self.stats.update(stats)
            # Pages finished before the restart count against max_pages; those in flight
            # at the crash were journalled as queued and count when leased again.
            self._handed_out = self.stats["pages"] + sum(
                n for name, n in self.stats.items() if name.startswith("failed/")
            )
            self.dead_letters.extend(dead_letters)
            max_items = self.settings.max_items
            if max_items and self.stats["items"] >= max_items:
                self._close("max_items")  # the earlier run wrote them all
            return self._queued

    def set_next_rid(self, rid: int) -> None:
        with self._lock:
            self._next_rid = max(self._next_rid, rid)

    def heartbeat(self, worker: str, lag_s: float) -> None:
        """A worker's process is alive (its heartbeat thread says so, whatever its event
        loop is doing); ``lag_s`` is how far behind that loop is."""
        with self._lock:
            state = self._workers.get(worker)
            if state is not None:
                state.last_seen, state.alive, state.lag_s = self._clock(), True, lag_s

    def forget_worker(self, worker: str) -> None:
        """A worker said goodbye: anything it still holds goes back to the queue now."""
        with self._lock:
            state = self._workers.get(worker)
            if state is not None:
                state.alive = False
                self._reclaim(list(state.leases), self._clock())
                self._check_finished(self._clock())
