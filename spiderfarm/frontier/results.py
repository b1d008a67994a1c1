"""Service mode's results: one for each finished request that descends from a submitted
one, held in a bounded queue for clients (``get_result_queue``) to take.

A result is a plain tuple while it waits (items as the JSON lines the feed got, decoded
only when a client takes it): ``(url, ok, status, reason, items, meta, root)``. The
queue never blocks the frontier: when it holds ``max_results`` results, or their items
pass ``max_bytes``, a new result is dropped from the queue (its items are in the feed
all the same) and counted.

Its own lock and condition, not the frontier's: a client blocked in ``get`` holds
nothing the crawl needs.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Result", "Results", "result_dict"]

#: url, ok, status (None if no response), reason (None if ok), items (JSON lines),
#: meta (the request's), root (the submitted URL it descends from).
Result = tuple[str, bool, int | None, str | None, list[str], dict[str, Any] | None, str]

#: What a held result costs besides its items' bytes (the tuple, its URL, its meta).
_OVERHEAD = 512
#: How often a blocked ``get`` asks whether its client is still there.
_ALIVE_EVERY_S = 0.2


def result_dict(result: Result) -> dict[str, Any]:
    """A result as clients get it: a plain dict."""
    url, ok, status, reason, items, meta, root = result
    return {
        "url": url,
        "ok": ok,
        "status": status,
        "reason": reason,
        "items": [json.loads(line) for line in items],
        "meta": dict(meta) if meta else {},
        "root": root,
    }


def _size(result: Result) -> int:
    return _OVERHEAD + len(result[0]) + sum(len(line) for line in result[4])


class Results:
    """The bounded queue of results (thread-safe)."""

    def __init__(self, max_results: int, max_bytes: int) -> None:
        self.max_results = max_results
        self.max_bytes = max_bytes
        self._held: deque[Result] = deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self.produced = 0
        self.dropped = 0
        self.taken = 0

    def put(self, result: Result) -> bool:
        """Hold ``result`` for a client; False (and counted) if the queue is full."""
        size = _size(result)
        with self._cond:
            self.produced += 1
            if len(self._held) >= self.max_results or self._bytes + size > self.max_bytes:
                self.dropped += 1
                return False
            self._held.append(result)
            self._bytes += size
            self._cond.notify()
            return True

    def get(
        self,
        block: bool = True,
        timeout: float | None = None,
        alive: Callable[[], bool] | None = None,
        most: int = 1,
    ) -> list[Result]:
        """Take up to ``most`` results, oldest first, waiting for the first as
        ``queue.Queue.get`` does; ``alive`` is asked now and then while waiting, and a
        client that is gone takes nothing.

        Raises:
            queue.Empty: nothing came in time (at once, with ``block=False``).
            ConnectionAbortedError: ``alive`` said the client has gone.
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while not self._held:
                if not block:
                    raise queue.Empty
                wait = _ALIVE_EVERY_S
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise queue.Empty
                    wait = min(wait, left)
                self._cond.wait(wait)
                if alive is not None and not alive():
                    # Asked before taking too: a reply to a closed socket may well be
                    # "sent" (into the kernel's buffer) and lost all the same.
                    raise ConnectionAbortedError("the client went away while waiting")
            taken = [self._held.popleft() for _ in range(min(most, len(self._held)))]
            self._bytes -= sum(map(_size, taken))
            self.taken += len(taken)
            return taken

    def unget(self, results: list[Result]) -> None:
        """Put back results a client took but never received (its connection broke while
        they were sent), first in line, whatever the caps say."""
        with self._cond:
            self._held.extendleft(reversed(results))
            self._bytes += sum(map(_size, results))
            self.taken -= len(results)
            self._cond.notify(len(results))

    def qsize(self) -> int:
        with self._cond:
            return len(self._held)

    def counts(self) -> dict[str, int]:
        """For ``status``: held now, and produced, taken and dropped so far."""
        with self._cond:
            return {
                "held": len(self._held),
                "held_bytes": self._bytes,
                "produced": self.produced,
                "taken": self.taken,
                "dropped": self.dropped,
                "max_results": self.max_results,
                "max_bytes": self.max_bytes,
            }
