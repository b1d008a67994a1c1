"""Which request goes next: each host's queue and timing (``Host``), and the ``Scheduler``
over them: the ready hosts, the hosts waiting out their politeness delay, the retries
waiting out their backoff, and the queued and owed counts of all of them.

No lock here: the frontier calls all of this under its own.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

from ..politeness import Throttle
from ..protocol import CONNECTION_FAILURES, W_PRIORITY, Info, WireRequest

__all__ = ["BURST_S", "Entry", "Host", "Scheduler"]

#: How far back a throttled (not fixed-delay) host may bank unused request starts.
BURST_S = 0.25

#: A queued request: (request id, wire, attempt). Request id 0 is a robots.txt request.
Entry = tuple[int, WireRequest, int]


class Host:
    """One politeness key: its queued requests, how many are in flight, and when the next
    may start (``next_at``, kept by the delay the throttle and robots.txt set)."""

    __slots__ = (
        "asked", "buckets", "delay", "errors", "failures", "floor", "in_flight", "next_at", "owed",
        "pages", "prios", "scheduled", "slowed_at", "slowed_to",
    )  # fmt: skip

    def __init__(self, delay: float) -> None:
        # Priority buckets: most crawls use one priority, so a deque beats a heap.
        self.buckets: dict[int, deque[Entry]] = {}
        self.prios: list[int] = []  # ascending; the highest is taken first
        # Work already started once (retries, reclaimed leases) and robots.txt: taken
        # before new requests, and still handed out when max_pages stops new ones.
        self.owed: deque[Entry] = deque()
        self.in_flight = 0
        self.next_at = 0.0
        self.scheduled = False  # in the scheduler's ready deque or waiting heap
        self.pages = 0
        self.errors = 0
        self.delay = delay  # current gap between request starts (politeness.Throttle)
        self.floor = 0.0  # robots.txt Crawl-delay
        self.asked = 0.0  # a Crawl-delay over max_crawl_delay_s, as asked (0: none)
        self.failures = 0  # connection failures in a row
        self.slowed_at = float("-inf")  # when a 429/503 or failures last slowed it down
        self.slowed_to = 0.0  # and to what delay

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

    def take(self) -> Entry:
        """The next request: owed work first, then the highest priority, oldest first."""
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

    def __len__(self) -> int:
        return len(self.owed) + sum(len(b) for b in self.buckets.values())

    def started(self, now: float, throttle: Throttle) -> None:
        """A request of this host, which has a delay, was leased at ``now``: space the next."""
        if self.floor or throttle.min_delay:
            self.next_at = now + throttle.gap(self.delay)
        else:
            # A throttle delay is a rate: a host idle for a while may take a short burst
            # (bounded by per_host_concurrency), so one exchange can lease several of its
            # requests while starts still average one per delay.
            start = max(self.next_at, now - BURST_S)
            self.next_at = start + throttle.gap(self.delay)

    def answered(
        self, kind: str, reason: str, info: Info, now: float, throttle: Throttle,
        leased_at: float,
    ) -> None:  # fmt: skip
        """What one outcome, of a request leased at ``leased_at``, tells of the host: its
        new delay, and when it may start next."""
        status, latency, retry_after = info[0], info[1], info[2]
        # Only a host that does not answer is backed off, not one serving bad pages.
        failed = kind in ("fail", "retry") and reason in CONNECTION_FAILURES
        if not failed and not status:
            # No answer and no connection failure (handed back unstarted, skipped by a
            # middleware, a bad URL): nothing learnt about the host.
            return
        self.failures = self.failures + 1 if failed else 0
        slow_down = status in (429, 503) or (failed and self.failures >= 3)
        if not slow_down or leased_at >= self.slowed_at:
            self.delay = throttle.update(
                self.delay, self.floor, status, latency, failed, self.failures
            )
            if slow_down:
                self.slowed_at, self.slowed_to = now, self.delay
        else:
            # Leased before the host was last slowed down, so sent at the old pace: that
            # slow-down already answers it. Eight 503s of one burst double the delay once,
            # not eight times (which would stall the host for a minute).
            self.delay = max(self.delay, self.slowed_to)
        if self.delay and (slow_down or self.floor or throttle.min_delay):
            # The worker may have fetched this later than we leased it: count the gap from
            # now as well, so two fetches of one host are never closer than a fixed delay
            # (and a host that asked us to slow down gets its full delay at once).
            self.next_at = max(self.next_at, now + self.delay)
        if retry_after:
            self.next_at = max(self.next_at, now + min(retry_after, throttle.max_delay))

    def obey_crawl_delay(self, asked: float, cap: float, now: float) -> bool:
        """robots.txt asks for ``asked`` s between starts: obey up to ``cap``; True if capped
        (a hostile or mistaken Crawl-delay: 1e9 would stall the host)."""
        capped = asked > cap
        if capped:
            self.asked = max(self.asked, asked)
            asked = cap
        self.floor = max(self.floor, asked)
        self.delay = max(self.delay, self.floor)
        if self.delay:
            self.next_at = max(self.next_at, now + self.delay)
        return capped

    def detail(self) -> dict[str, Any]:
        """The host as ``Frontier.status(detail=True)`` shows it."""
        return {
            "queued": len(self),
            "in_flight": self.in_flight,
            "pages": self.pages,
            "errors": self.errors,
            "delay_s": round(self.delay, 3),
            "failures": self.failures,
            **({"crawl_delay_asked_s": self.asked} if self.asked else {}),
        }


class Scheduler:
    """The hosts, and which may start a request now.

    A host with queued work and a free slot is *scheduled* once: in ``ready`` if it may
    start now, else in the ``waiting`` heap until its ``next_at``. Retries waiting for
    their backoff sit in the ``delayed`` heap. ``queued`` counts every request not yet
    leased (those held for robots.txt too), ``owed`` those in the hosts' owed deques.
    """

    __slots__ = (
        "_clock", "_per_host", "_seq", "_throttle", "delayed", "hosts", "owed", "paused", "queued",
        "ready", "waiting",
    )  # fmt: skip

    def __init__(self, throttle: Throttle, per_host: int, clock: Callable[[], float]) -> None:
        self._throttle = throttle
        self._per_host = per_host
        self._clock = clock
        self.hosts: dict[str, Host] = {}
        self.ready: deque[str] = deque()
        self.waiting: list[tuple[float, str]] = []  # (next_at, host): politeness delay
        # retries waiting for their backoff: (ready_at, seq, host, rid, wire, attempt)
        self.delayed: list[tuple[float, int, str, int, WireRequest, int]] = []
        self._seq = 0
        self.queued = 0
        self.owed = 0
        # Hosts an operator paused (the console): never scheduled until resumed.
        self.paused: set[str] = set()

    def enqueue(self, key: str, rid: int, wire: WireRequest, attempt: int) -> None:
        """Queue a request on its host now."""
        host = self.hosts.get(key)
        if host is None:
            host = self.hosts[key] = Host(self._throttle.min_delay)
        if host.put(rid, wire, attempt):
            self.owed += 1
        self.queued += 1
        if not host.scheduled:
            self.schedule(key, host, self._clock())

    def enqueue_at(
        self, ready_at: float, key: str, rid: int, wire: WireRequest, attempt: int
    ) -> None:
        """Queue a request on its host once ``ready_at`` has come (a retry's backoff)."""
        self._seq += 1
        heapq.heappush(self.delayed, (ready_at, self._seq, key, rid, wire, attempt))
        self.queued += 1

    def hold(self) -> None:
        """Count a request held outside any host's queue (for its robots.txt)."""
        self.queued += 1

    def unhold(self, count: int) -> None:
        """``count`` held requests are about to be admitted again."""
        self.queued -= count

    def schedule(self, key: str, host: Host, now: float) -> None:
        """Put ``host`` in line if it has work and a free slot (and is not in line yet)."""
        # With a fixed delay one request at a time: a worker may start a lease late, so
        # only ack-to-lease spacing can promise the gap.
        if host.scheduled or not (host.prios or host.owed) or key in self.paused:
            return
        if host.in_flight >= (1 if host.floor or self._throttle.min_delay else self._per_host):
            return
        host.scheduled = True
        if host.next_at > now:
            heapq.heappush(self.waiting, (host.next_at, key))
        else:
            self.ready.append(key)

    def promote(self, now: float) -> None:
        """Queue the retries whose backoff is over, and ready the hosts whose delay is."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, _, key, rid, wire, attempt = heapq.heappop(delayed)
            self.queued -= 1
            self.enqueue(key, rid, wire, attempt)
        waiting, ready, hosts = self.waiting, self.ready, self.hosts
        while waiting and waiting[0][0] <= now:
            key = heapq.heappop(waiting)[1]
            if hosts[key].next_at > now:  # an ack pushed this host back meanwhile
                heapq.heappush(waiting, (hosts[key].next_at, key))
            else:
                ready.append(key)

    def take(self, want: int, now: float, new_room: int) -> tuple[list[str], list[Entry], int]:
        """Up to ``want`` requests to start now, each from a ready host in turn, at most
        ``new_room`` of them new (owed work is not limited). Returns their hosts' keys,
        the requests, and how many of them are new. Call ``promote`` first."""
        waiting, ready, hosts, throttle = self.waiting, self.ready, self.hosts, self._throttle
        keys: list[str] = []
        entries: list[Entry] = []
        at_limit: list[str] = []
        new = 0
        while ready and len(entries) < want:
            key = ready.popleft()
            host = hosts[key]
            if key in self.paused:  # paused while in line: out of it until resumed
                host.scheduled = False
                continue
            if host.next_at > now:  # an ack pushed this host back after it became ready
                heapq.heappush(waiting, (host.next_at, key))
                continue
            if new >= new_room and not host.owed:
                at_limit.append(key)  # it waits in line for owed work, or the crawl's end
                continue
            host.scheduled = False
            entry = host.take()
            if not entry[2] and entry[0]:
                new += 1
            keys.append(key)
            entries.append(entry)
            host.in_flight += 1
            if host.delay:
                host.started(now, throttle)
            self.schedule(key, host, now)
        ready.extendleft(reversed(at_limit))
        self.queued -= len(entries)
        self.owed -= len(entries) - new
        return keys, entries, new

    def pause(self, key: str) -> None:
        """Lease nothing more of host ``key`` (known or not yet) until ``resume``."""
        self.paused.add(key)

    def resume(self, key: str, now: float) -> None:
        """Undo ``pause``: the host goes back in line if it has work."""
        self.paused.discard(key)
        host = self.hosts.get(key)
        if host is not None:
            self.schedule(key, host, now)

    def detail(self) -> dict[str, dict[str, Any]]:
        """Every host as ``Frontier.status(detail=True)`` shows it."""
        paused = self.paused
        return {key: {**host.detail(), "paused": key in paused} for key, host in self.hosts.items()}
