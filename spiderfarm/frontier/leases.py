"""Who holds what: the lease table, lease deadlines, and the workers' liveness.

A lease is one request handed to one worker until it reports an outcome, hands it back,
or is reaped (its worker went silent, or the lease's deadline passed). No lock here: the
frontier calls all of this under its own, and decides what becomes of a reaped request.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Lease, WireRequest
from .hosts import Entry

__all__ = ["Leased", "Leases", "Worker"]

#: A lease as the table keeps it: (worker, request id, wire, attempt, deadline, host key).
Leased = tuple[str, int, WireRequest, int, float, str]


@dataclass(slots=True)
class Worker:
    """One worker as the frontier knows it."""

    name: str
    last_seen: float
    leases: set[int] = field(default_factory=set)
    alive: bool = True
    lag_s: float = 0.0  # how late the worker's event loop was at its last heartbeat
    pages: int = 0  # pages it fetched whose outcome was accepted
    # It handed leases back unstarted and asked for none: it is stopping (SIGINT/SIGTERM).
    draining: bool = False


class Leases:
    """The leases out, by id, and the workers holding them."""

    __slots__ = ("_deadlines", "_next_id", "_table", "workers")

    def __init__(self) -> None:
        self._table: dict[int, Leased] = {}
        self._deadlines: list[float] = []  # one per batch granted: when to look for expiry
        self.workers: dict[str, Worker] = {}
        # Lease ids start at a random point so that an ack from before a server restart
        # can never match a lease handed out after it.
        self._next_id = random.getrandbits(40) << 20

    def __len__(self) -> int:
        return len(self._table)

    def seen(self, name: str, now: float) -> Worker:
        """``name`` called now (registered on its first call); it is alive."""
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = Worker(name, now)
        worker.last_seen, worker.alive = now, True
        return worker

    def heartbeat(self, name: str, now: float, lag_s: float) -> None:
        """A known worker's process is alive; its event loop is ``lag_s`` behind."""
        worker = self.workers.get(name)
        if worker is not None:
            worker.last_seen, worker.alive, worker.lag_s = now, True, lag_s

    def grant(
        self, worker: Worker, keys: list[str], entries: list[Entry], deadline: float
    ) -> list[Lease]:
        """Lease ``entries`` (of the hosts ``keys``) to ``worker`` until ``deadline``."""
        table, held, name = self._table, worker.leases, worker.name
        lease_id = self._next_id
        leases: list[Lease] = []
        for key, (rid, wire, attempt) in zip(keys, entries, strict=True):
            table[lease_id] = (name, rid, wire, attempt, deadline, key)
            held.add(lease_id)
            leases.append((lease_id, attempt, wire))
            lease_id += 1
        self._next_id = lease_id
        if leases:
            heapq.heappush(self._deadlines, deadline)
        return leases

    def settle(self, worker: Worker, lease_id: int) -> Leased | None:
        """End the lease ``worker`` reports on; None if it is not (or no longer) its."""
        lease = self._table.get(lease_id)
        if lease is None or lease[0] != worker.name:
            return None
        del self._table[lease_id]
        worker.leases.discard(lease_id)
        return lease

    def revoke(self, lease_id: int) -> Leased | None:
        """End a lease whoever holds it (None if it has ended already)."""
        lease = self._table.pop(lease_id, None)
        if lease is not None:
            self.workers[lease[0]].leases.discard(lease_id)
        return lease

    def forget(self, name: str) -> list[int] | None:
        """``name`` said goodbye: it is dead, and these leases of its are to be revoked
        (None if it never called)."""
        worker = self.workers.get(name)
        if worker is None:
            return None
        worker.alive = False
        return list(worker.leases)

    def silent(self, now: float, timeout_s: float) -> Iterator[Worker]:
        """The workers silent for more than ``timeout_s``, now marked dead, that hold
        leases (revoke them as each comes)."""
        for worker in self.workers.values():
            if worker.alive and now - worker.last_seen > timeout_s:
                worker.alive = False
                if worker.leases:
                    yield worker

    def expired(self, now: float) -> list[int]:
        """The leases past their deadline."""
        # One deadline entry per lease batch; when any passes, scan for what really expired.
        deadlines, due = self._deadlines, False
        while deadlines and deadlines[0] <= now:
            heapq.heappop(deadlines)
            due = True
        if not due:
            return []
        return [lease_id for lease_id, lease in self._table.items() if lease[4] <= now]

    def alive(self) -> int:
        """How many workers are alive."""
        return sum(w.alive for w in self.workers.values())

    def detail(self, now: float) -> dict[str, dict[str, Any]]:
        """Every worker as ``Frontier.status(detail=True)`` shows it."""
        return {
            name: {
                "alive": w.alive,
                "leases": len(w.leases),
                "pages": w.pages,
                "draining": w.draining,
                "last_seen_s": round(now - w.last_seen, 3),
                "loop_lag_s": round(w.lag_s, 3),
            }
            for name, w in self.workers.items()
        }
