"""The worker's heartbeat, on a thread and a connection of its own.

The frontier declares a worker dead when it has been silent for ``worker_timeout_s``.
Heartbeats that rode the event loop made a live worker look dead whenever a callback held
the loop (``time.sleep`` in a callback, a page with a million links): its leases were
taken back and burnt an attempt each. Here a thread says "alive" every ``every_s``
whatever the loop is doing, and reports how far behind the loop is; the loop's own ticker
notices a stall and names the callbacks that were running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter

from .client import FrontierClient
from .errors import ConnectError

logger = logging.getLogger(__name__)

__all__ = ["TICK_S", "Heartbeat", "LoopWatch"]

#: How often the event loop's ticker runs.
TICK_S = 0.1
#: A loop stalled longer than this is reported.
STALL_S = 1.0


class LoopWatch:
    """Runs on the event loop: notes each tick, and which callbacks are running, so the
    heartbeat can report the loop's lag and a stall can be blamed on its callbacks."""

    def __init__(self) -> None:
        self.last_tick = time.monotonic()
        self.running: Counter[str] = Counter()  # callback name -> how many in progress
        self._reported: set[str] = set()

    def lag_s(self) -> float:
        """How late the loop's next tick is (0 for a loop that keeps up). Any thread."""
        return max(0.0, time.monotonic() - self.last_tick - TICK_S)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            stalled = now - self.last_tick - TICK_S
            self.last_tick = now
            if stalled > STALL_S and self.running:
                self.blocked(sorted(self.running), stalled)

    def blocked(self, names: list[str], seconds: float) -> None:
        """Log, once per callback name, that it held the event loop."""
        new = [name for name in names if name not in self._reported]
        if not new:
            return
        self._reported.update(new)
        logger.warning(
            "the event loop was blocked for %.1fs while callback %s ran: every request of "
            "this worker waited meanwhile. Make it async (await, not time.sleep) or run "
            "its blocking part in a thread (await asyncio.to_thread(...)); this is logged "
            "once per callback",
            seconds,
            " or ".join(new),
        )


class Heartbeat:
    """A daemon thread that calls the server's ``heartbeat`` every ``every_s``."""

    def __init__(
        self, client: FrontierClient, worker_id: str, watch: LoopWatch, every_s: float
    ) -> None:
        self._client = client.clone(call_timeout_s=max(every_s * 2, 1.0))
        self._worker_id = worker_id
        self._watch = watch
        self.every_s = every_s
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 5)

    def _run(self) -> None:
        asyncio.run(self._beat())

    async def _beat(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._client.heartbeat(self._worker_id, self._watch.lag_s())
                    self.beats += 1
                except ConnectError as exc:  # the pump sees the same and decides
                    logger.debug("heartbeat: %s", exc)
                except Exception as exc:  # an older server without heartbeat, say
                    logger.debug("heartbeat failed: %s: %s", type(exc).__name__, exc)
                self._stop.wait(self.every_s)  # this thread's own loop: nothing else waits
        finally:
            with contextlib.suppress(Exception):
                await self._client.close()
