"""How many leases a worker holds: as many as keep its event loop busy, and no more.

A worker that waits on the network needs many requests in flight (``concurrency``, plus a
prefetch buffer to cover the round trip to the server). A worker whose loop is always busy
(fast pages, heavy callbacks, a machine shared with other processes) gains nothing from
more: a page it holds waits for its CPU while it could be waiting in the server's queue,
where an idle worker would take it. So the hold follows how busy the loop thread is: the
share of wall time it ran or was ready to run (``/proc/thread-self/schedstat`` on Linux:
CPU time plus time waiting for a CPU; the thread's CPU time elsewhere). Busy almost all the
time: hold fewer; idle for a good share: hold more, back up to the most.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Hold"]

TICK_S = 0.1  # how often the busy share is measured
BUSY = 0.95  # at or above: the loop has more than it can do; hold fewer
IDLE = 0.85  # below: the loop waits for the network or the server; hold more
FLOOR = 12  # the fewest leases a busy worker holds (its round trips stay batched)


SCHEDSTAT = "/proc/thread-self/schedstat"  # ns on a CPU, ns waiting for one, timeslices


def schedstat_busy_s() -> float:
    """Seconds the calling thread ran or waited to run (Linux); OSError elsewhere."""
    with open(SCHEDSTAT, "rb") as fh:
        run_ns, wait_ns = fh.read().split()[:2]
    return (int(run_ns) + int(wait_ns)) / 1e9


def _busy_clock() -> Callable[[], float]:
    try:
        schedstat_busy_s()
    except (OSError, ValueError):
        return time.thread_time
    return schedstat_busy_s


class Hold:
    """The number of leases to hold, between ``least`` and ``most``; call ``sample`` from
    the loop thread as often as convenient (it measures every ``TICK_S``)."""

    def __init__(self, concurrency: int, clock: Callable[[], float] | None = None) -> None:
        self.most = concurrency + max(2, concurrency // 2)  # the slots plus a buffer
        self.least = min(self.most, FLOOR)
        self.leases = self.most
        self._busy_s = clock or _busy_clock()
        self._at = time.monotonic()
        self._busy_at = self._busy_s()

    @property
    def flush_at(self) -> int:
        """Outcomes worth a round trip on their own: a sixth of the hold."""
        return max(1, self.leases // 6)

    def sample(self, now: float) -> None:
        elapsed = now - self._at
        if elapsed < TICK_S:
            return
        busy = self._busy_s()
        self.update((busy - self._busy_at) / elapsed)
        self._at, self._busy_at = now, busy

    def update(self, share: float) -> None:
        """Adjust to a measured busy share (0-1) of the loop thread."""
        leases = self.leases
        if share >= BUSY:
            self.leases = max(self.least, leases - max(1, leases // 4))
        elif share < IDLE:
            self.leases = min(self.most, leases + max(2, leases // 2))
