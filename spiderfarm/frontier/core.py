"""``Frontier``: the crawl state's one lock and its public API (the facade the server
exposes, the start feeder drives and the journal checkpoints).

Behind it: ``ledger.Ledger`` (what becomes of each request), ``hosts.Scheduler`` (which
goes next), ``leases.Leases`` (who holds what), ``limits.Limits`` (what ends the crawl)
and ``sessions.Jars`` (the crawl's cookie jars).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..politeness import Throttle
from ..protocol import (
    RUNNING,
    CookieChange,
    JarData,
    JarId,
    JarUpdates,
    Lease,
    Outcome,
    PushEntry,
    State,
    WireRequest,
)
from ..settings import Settings
from .hosts import Scheduler
from .leases import Leases, Worker
from .ledger import Ledger
from .limits import Limits
from .results import Results
from .sessions import Jars

logger = logging.getLogger("spiderfarm.frontier")

__all__ = ["Frontier"]

_T = TypeVar("_T")  # what the server's feeds report as their offsets


class Frontier:
    """The whole crawl's state. Thread-safe; every public method takes the lock once."""

    def __init__(
        self,
        settings: Settings,
        allowed_domains: Iterable[str] = (),
        write_items: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        journaled: bool = False,
        serving: bool = False,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        # Idle workers wait here for work (exchange's wait_s), woken by whatever may have
        # made some or ended the crawl: a push, a submission, an ack, a reclaimed lease,
        # a close.
        self._work = threading.Condition(self._lock)
        self._waiting = 0
        self.stats: Counter[str] = Counter()
        # The journal's changes since the last checkpoint (None: not journaled): _journal.
        self._ops: list[tuple[Any, ...]] | None = [] if journaled else None
        throttle = Throttle(settings)
        self._scheduler = Scheduler(throttle, settings.per_host_concurrency, clock)
        self._leases = Leases()
        self._limits = Limits(settings, self.stats, write_items or (lambda lines: None), clock())
        self._ledger = Ledger(
            settings, allowed_domains, throttle, self._scheduler, self._leases, self._limits,
            self.stats, self._journal,
        )  # fmt: skip
        self.dead_letters = self._ledger.dead_letters
        self._paused = False  # leasing paused farm-wide (the console's pause)
        #: Service mode's results for clients (None unless ``serving``).
        self.results: Results | None = None
        if serving:
            self._limits.serving = True
            self.results = Results(settings.result_queue_size, settings.result_queue_bytes)
            self._ledger.results = self.results
        self._jars = Jars(self.stats)

    def _journal(self, op: tuple[Any, ...]) -> None:
        """Record one change for the next checkpoint (``journal.py`` applies them)."""
        if self._ops is not None:
            self._ops.append(op)

    # -- the crawl's state, as the server, the cli and the start feeder read it ----
    @property
    def state(self) -> State:
        return self._limits.state

    @property
    def close_reason(self) -> str:
        return self._limits.close_reason

    @property
    def queued(self) -> int:
        """Requests queued, not yet leased (held for robots.txt and delayed ones too)."""
        with self._lock:
            return self._scheduler.queued

    @property
    def started_at(self) -> float:
        return self._limits.started_at

    @property
    def finished_at(self) -> float:
        return self._limits.finished_at

    @property
    def serving(self) -> bool:
        return self._limits.serving

    @property
    def finished(self) -> threading.Event:
        """Set once the crawl has finished (``tick`` says ``FINISHED`` from then on)."""
        return self._limits.finished

    @property
    def start_wanted(self) -> threading.Event:
        """Set when the start feeder should read more (or stop: the crawl is closing)."""
        return self._limits.start_wanted

    # -- requests in ---------------------------------------------------------------
    def push(self, entries: Sequence[PushEntry]) -> int:
        """Queue new requests; returns how many were accepted."""
        with self._lock:
            accepted = self._ledger.push(entries)
            self._wake()
            return accepted

    def submit(self, entries: Sequence[PushEntry]) -> tuple[list[str], list[tuple[str, str]]]:
        """Service mode: queue requests a client submitted, each the root of the results
        it leads to. Returns the URLs accepted and (url, reason) for each filtered
        out (a duplicate, offsite, too deep, disallowed by a known robots.txt): each of
        those has its result already. Accepted even while closing, as links are."""
        with self._lock:
            accepted, refused = self._ledger.submit(entries)
            self.stats["submitted"] += len(entries)
            self._wake()
            return accepted, refused

    def _idle(self) -> bool:
        """Nothing to lease now or later, until something happens: nothing queued in a
        running crawl (another worker's pages may yet add some; the crawl may finish)."""
        return self._limits.state == RUNNING and not self._scheduler.queued

    def _wake(self) -> None:
        """Wake the workers waiting for work, if any (under the lock)."""
        if self._waiting and not self._idle():
            self._work.notify_all()

    # -- the start stream (start.py) ----------------------------------------------
    def open_start(self) -> None:
        """The start requests are still coming: the crawl may not finish before
        ``end_start``."""
        with self._lock:
            self._limits.starting = True

    def start_room(self, target: int) -> int:
        """How many more start requests to read now: 0 once the crawl is closing or at
        ``max_pages``, else what fills the queue to ``target``."""
        with self._lock:
            return self._limits.start_room(target, self._scheduler.queued)

    def end_start(self) -> None:
        """The start stream has ended (or failed, or was stopped)."""
        with self._lock:
            self._limits.starting = False
            self._check_finished(self._clock())

    def write_start_items(self, items: list[str]) -> None:
        """Items that ``start()`` yielded itself, written as an ack writes a page's."""
        with self._lock:
            self._limits.write(items)

    def note(self, name: str, count: int = 1) -> None:
        """Count something that happened outside any request (``errors/start_requests``)."""
        with self._lock:
            self.stats[name] += count

    def note_spider_stats(self, notes: str) -> None:
        """Merge spider stats noted outside any page (the server's own spider: ``start()``)."""
        with self._lock:
            self._ledger.merge_spider_stats(notes)

    # -- pausing (the console) -----------------------------------------------------
    def pause(self, host: str | None = None) -> None:
        """Lease nothing more (``host`` None) or nothing more of ``host``, until ``resume``.
        Leases out are acked as usual; a paused crawl does not finish while work is queued."""
        with self._lock:
            if host is None:
                self._paused = True
            else:
                self._scheduler.pause(host)

    def resume(self, host: str | None = None) -> None:
        """Undo ``pause`` (farm-wide, or of one host)."""
        with self._lock:
            if host is None:
                self._paused = False
            else:
                self._scheduler.resume(host, self._clock())
            self._wake()

    # -- the workers' calls --------------------------------------------------------
    def exchange(
        self,
        worker: str,
        outcomes: Sequence[Outcome],
        want: int,
        cookies: Sequence[CookieChange] = (),
        wait_s: float = 0.0,
    ) -> tuple[list[Lease], list[int], str]:
        """Apply ``cookies`` (the changes the worker's responses made to the crawl's
        jars) and ``outcomes``, then lease up to ``want`` requests to ``worker``.

        Returns the new leases, the ids of outcomes refused because their lease was no
        longer this worker's, and the crawl state (``running``/``closing``/``finished``).
        With ``wait_s``, a worker that holds nothing, asks for work and gets none from a
        running crawl with nothing queued waits up to that long for some to come, or for
        the end (a long poll: an idle worker makes no busy round trips, and hears of new
        links or of the crawl's end at once).
        """
        with self._lock:
            now = self._clock()
            if cookies:  # first: the requests these pages made may be leased below
                self._jars.apply(cookies)
            state = self._leases.seen(worker, now)
            apply = self._ledger.apply
            refused = [o[0] for o in outcomes if not apply(state, o, now)]
            if want:
                state.draining = False
            elif not state.draining:  # handing leases back, asking for none: it is stopping
                state.draining = any(o[1] == "release" for o in outcomes)
            self._reap(now)
            self._limits.check_deadline(now)
            leases = self._lease(state, want, now) if want > 0 else []
            self._check_finished(now)
            if self._waiting:
                self._wake()
            if wait_s and want > 0 and not leases and not state.leases and self._idle():
                self._waiting += 1
                try:
                    self._work.wait_for(lambda: not self._idle(), wait_s)
                finally:
                    self._waiting -= 1
                now = self._clock()
                state = self._leases.seen(worker, now)
                leases = self._lease(state, want, now)
                self._check_finished(now)
            return leases, refused, self._limits.state

    def jar_updates(self, worker: str, leases: Sequence[Lease]) -> JarUpdates:
        """The cookie jars ``worker`` should take with ``leases``: those of the leases,
        and those it holds that changed, in the versions it lacks."""
        with self._lock:
            return self._jars.updates(worker, leases) if self._jars else {}

    def cookies(self, jar: JarId = None) -> JarData:
        """A copy of one cookie jar: ``"domain|path"`` -> name -> cookie."""
        with self._lock:
            return self._jars.cookies(jar)

    def _lease(self, worker: Worker, want: int, now: float) -> list[Lease]:
        limits, scheduler = self._limits, self._scheduler
        if limits.state != RUNNING or self._paused:
            return []
        scheduler.promote(now)
        # No new pages past max_pages; owed work (retries, reclaimed leases, robots.txt)
        # still goes. The crawl closes once none is left and every page handed out is
        # acked (check_finished): a lease handed back unstarted is leased again, so
        # exactly max_pages pages run.
        keys, entries, new = scheduler.take(want, now, limits.page_room(want))
        limits.handed_out += new
        leases = self._leases.grant(worker, keys, entries, now + self.settings.lease_timeout_s)
        limits.want_starts(scheduler.queued)
        return leases

    def _reap(self, now: float) -> None:
        """Requeue the leases of dead workers and leases past their deadline."""
        ledger, stats = self._ledger, self.stats
        for worker in self._leases.silent(now, self.settings.worker_timeout_s):
            logger.warning(
                "worker %s silent for %.1fs: requeueing its %d leased requests",
                worker.name, now - worker.last_seen, len(worker.leases),
            )  # fmt: skip
            stats["workers/dead"] += 1
            ledger.reclaim(list(worker.leases), now)
            self._jars.forget_worker(worker.name)
        expired = self._leases.expired(now)
        if expired:
            stats["leases/expired"] += len(expired)
            ledger.reclaim(expired, now)

    def heartbeat(self, worker: str, lag_s: float) -> None:
        """A worker's process is alive (its heartbeat thread says so, whatever its event
        loop is doing); ``lag_s`` is how far behind that loop is."""
        with self._lock:
            self._leases.heartbeat(worker, self._clock(), lag_s)

    def forget_worker(self, worker: str) -> None:
        """A worker said goodbye: anything it still holds goes back to the queue now."""
        with self._lock:
            lease_ids = self._leases.forget(worker)
            self._jars.forget_worker(worker)
            if lease_ids is not None:
                self._ledger.reclaim(lease_ids, self._clock())
                self._check_finished(self._clock())
                self._wake()

    # -- housekeeping and the end --------------------------------------------------
    def tick(self) -> str:
        """Housekeeping when no worker calls: reap, check limits; returns the state."""
        with self._lock:
            now = self._clock()
            self._reap(now)
            self._check_finished(now)
            self._wake()
            return self._limits.state

    def close(self, reason: str) -> None:
        """Stop handing out work; the crawl finishes once outstanding leases are acked."""
        with self._lock:
            self._limits.close(reason)
            self._check_finished(self._clock())
            self._wake()

    def _check_finished(self, now: float) -> None:
        self._limits.check_finished(now, len(self._leases), self._scheduler)

    def status(self, detail: bool = False) -> dict[str, Any]:
        """A snapshot of plain data for progress lines, ``status`` and the summary;
        ``detail`` adds every host and dead letter (costly on big crawls: not per tick)."""
        with self._lock:
            now = self._clock()
            limits = self._limits
            end = limits.finished_at or now
            snapshot: dict[str, Any] = {
                "state": limits.state,
                "close_reason": limits.close_reason,
                "queued": self._scheduler.queued,
                "in_flight": len(self._leases),
                "seen": len(self._ledger.seen),
                "workers": self._leases.alive(),
                "elapsed_s": end - limits.started_at,
                "stats": dict(self.stats),
                "spider_stats": dict(self._ledger.spider_stats),
                "paused": self._paused,
                "paused_hosts": sorted(self._scheduler.paused),
            }
            if self.results is not None:
                snapshot["results"] = self.results.counts()
            if detail:
                snapshot["dead_letters"] = list(self.dead_letters)
                snapshot["worker_detail"] = self._leases.detail(now)
                hosts = snapshot["hosts"] = self._scheduler.detail()
                for key, robots in self._ledger.robots_states().items():
                    if key in hosts:
                        hosts[key]["robots"] = robots
            return snapshot

    # -- persistence (see journal.py) ---------------------------------------------
    def flush_feed(self, flush: Callable[[], None]) -> None:
        """Run ``flush`` under the lock that item writes hold."""
        with self._lock:
            flush()

    def checkpoint(
        self, feed_offset: Callable[[], _T]
    ) -> tuple[list[tuple[Any, ...]], _T, dict[str, int], dict[str, float], str, str]:
        """Take the changes since the last checkpoint, with the feed positions that match
        them exactly: both are read under the lock that every ack holds. The positions are
        read first, so that a ``feed_offset`` that raises takes no changes with it."""
        with self._lock:
            offsets = feed_offset()
            ops, self._ops = self._ops or [], []
            if self._jars:
                ops += self._jars.take_dirty()
            spider_stats = dict(self._ledger.spider_stats)
            return ops, offsets, dict(self.stats), spider_stats, self.state, self.close_reason

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
        roots: Iterable[tuple[int, str]] = (),
        jars: Iterable[tuple[JarId, JarData]] = (),
        spider_stats: dict[str, float] | None = None,
    ) -> int:
        """Load a journal's state before any worker connects; returns the queued count."""
        with self._lock:
            self._ledger.restore(fingerprints, queued, roots)
            self._jars.restore(jars)
            self.stats.update(stats)
            self._ledger.spider_stats.update(spider_stats or {})
            self.dead_letters.extend(dead_letters)
            self._limits.restore()
            return self._scheduler.queued

    def set_next_rid(self, rid: int) -> None:
        with self._lock:
            self._ledger.next_rid = max(self._ledger.next_rid, rid)
