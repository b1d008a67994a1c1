"""What the console shows, taken from the frontier at a bounded rate: ``Monitor`` (a
thread taking ``Frontier.status`` snapshots), ``History`` (the throughput chart over the
whole crawl, in a fixed number of buckets) and ``View`` (one snapshot with everything
derived from it, computed once however many browsers ask).

HTTP requests read ``Monitor.latest`` only: no request ever takes the frontier's lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("spiderfarm.console")

__all__ = ["HOST_SORTS", "History", "Monitor", "View", "errors_by_reason", "worker_state"]

#: The host table's sort keys.
HOST_SORTS = ("host", "queued", "in_flight", "pages", "errors", "delay_s")
#: A host with this many connection failures in a row is backed off (as the summary says).
BACKED_OFF_FAILURES = 3


def errors_by_reason(stats: dict[str, int]) -> dict[str, int]:
    """``failed/X`` and ``errors/X`` counters, as ``status`` and the summary count errors."""
    return {k: v for k, v in stats.items() if k.startswith(("failed/", "errors/")) and v}


def worker_state(w: dict[str, Any], crawl_state: str) -> str:
    """``active``, ``idle``, ``draining`` or ``dead``."""
    if not w["alive"]:
        return "dead"
    if w.get("draining") or (crawl_state == "closing" and w["leases"]):
        return "draining"
    return "active" if w["leases"] else "idle"


class History:
    """Pages/s and errors/s over the whole crawl in at most ``capacity`` buckets: when
    full, neighbours merge two by two and buckets grow twice as wide, so a week-long
    crawl keeps the same small size as a minute-long one, at a coarser grain."""

    __slots__ = ("_last", "buckets", "capacity", "width_s")

    def __init__(self, capacity: int = 240, width_s: float = 1.0) -> None:
        self.capacity, self.width_s = capacity, width_s
        # (start_s, end_s, pages, errors): counts within [start, end) of crawl time
        self.buckets: list[tuple[float, float, int, int]] = []
        self._last: tuple[float, int, int] | None = None

    def add(self, t: float, pages: int, errors: int) -> None:
        """The crawl's counters at crawl time ``t`` (cumulative)."""
        last, self._last = self._last, (t, pages, errors)
        if last is None:
            return
        t0, p0, e0 = last
        if t <= t0:
            return
        dp, de = max(pages - p0, 0), max(errors - e0, 0)
        buckets = self.buckets
        if buckets and buckets[-1][1] - buckets[-1][0] < self.width_s:
            start, _, p, e = buckets[-1]
            buckets[-1] = (start, t, p + dp, e + de)
        else:
            buckets.append((t0, t, dp, de))
        if len(buckets) > self.capacity:
            pairs = zip(buckets[0::2], buckets[1::2], strict=False)
            merged = [(a[0], b[1], a[2] + b[2], a[3] + b[3]) for a, b in pairs]
            if len(buckets) % 2:
                merged.append(buckets[-1])
            self.buckets = merged
            self.width_s *= 2

    def points(self) -> list[list[float]]:
        """``[end_s, pages/s, errors/s]`` for each bucket."""
        return [
            [round(end, 2), round(p / (end - start), 2), round(e / (end - start), 2)]
            for start, end, p, e in self.buckets
        ]


def _machine_pid(worker_id: str) -> tuple[str, str]:
    """A worker id is ``w{n}-{machine}-{pid}`` (``FrontierService.hello``)."""
    _, _, rest = worker_id.partition("-")
    machine, _, pid = rest.rpartition("-")
    return machine, pid


class View:
    """One snapshot and what the console derives from it. Immutable once made; the host
    table's sorted orders are made on first use and kept."""

    def __init__(
        self,
        status: dict[str, Any],
        detail: dict[str, Any],
        rates: dict[str, float],
        worker_rates: dict[str, float],
        chart: list[list[float]],
        settings: dict[str, Any],
        serving: bool,
        taken_at: float,
    ) -> None:
        self.status, self.detail, self.taken_at = status, detail, taken_at
        stats = status["stats"]
        pages, items = stats.get("pages", 0), stats.get("items", 0)
        elapsed = status["elapsed_s"]
        errors = errors_by_reason(stats)
        crawl_state = status["state"]
        workers = []
        for name, w in sorted(detail.get("worker_detail", {}).items()):
            machine, pid = _machine_pid(name)
            workers.append({
                "id": name, "machine": machine, "pid": pid, "pages": w.get("pages", 0),
                "pages_per_s": round(worker_rates.get(name, 0.0), 1), "in_flight": w["leases"],
                "last_seen_s": w["last_seen_s"], "state": worker_state(w, crawl_state),
            })  # fmt: skip
        self.hosts: dict[str, dict[str, Any]] = detail.get("hosts", {})
        self._orders: dict[tuple[str, bool], list[str]] = {}
        self._lock = threading.Lock()
        dead = detail.get("dead_letters", [])
        self.state: dict[str, Any] = {
            "state": crawl_state,
            "close_reason": status["close_reason"],
            "paused": status["paused"],
            "paused_hosts": status["paused_hosts"][:100],
            "serving": serving,
            "elapsed_s": round(elapsed, 2),
            "pages": pages,
            "items": items,
            "queued": status["queued"],
            "in_flight": status["in_flight"],
            "seen": status["seen"],
            "workers": status["workers"],
            "pages_per_s": round(rates.get("pages", 0.0), 1),
            "pages_per_s_avg": round(pages / elapsed, 1) if elapsed > 0 else 0.0,
            "items_per_s": round(rates.get("items", 0.0), 1),
            "errors": sum(errors.values()),
            "errors_by_reason": dict(sorted(errors.items())),
            "retries": sum(v for k, v in stats.items() if k.startswith("retries/")),
            "dead_letters": stats.get("dead_letters", 0),
            "eta_s": _eta(status, rates, settings),
            "chart": chart,
            "worker_rows": workers,
            "host_count": len(self.hosts),
            "dead_letter_rows": [list(d) for d in dead[-100:]],
            "spider_stats": dict(sorted(status.get("spider_stats", {}).items())),
            "results": status.get("results"),
            "taken_at": round(taken_at, 3),
        }
        self.state_json = json.dumps(self.state).encode()

    def host_order(self, sort: str, descending: bool) -> list[str]:
        """The hosts sorted by ``sort`` (one of ``HOST_SORTS``), made once per view."""
        key = (sort, descending)
        with self._lock:
            order = self._orders.get(key)
            if order is None:
                hosts = self.hosts
                if sort == "host":
                    order = sorted(hosts, reverse=descending)
                else:
                    order = sorted(hosts, key=lambda h: (hosts[h][sort], h), reverse=descending)
                self._orders[key] = order
            return order

    def host_page(self, sort: str, descending: bool, page: int, per_page: int) -> dict[str, Any]:
        """One page of the host table."""
        order = self.host_order(sort, descending)
        start = page * per_page
        rows = []
        for name in order[start : start + per_page]:
            h = self.hosts[name]
            rows.append({
                "host": name, "queued": h["queued"], "in_flight": h["in_flight"],
                "pages": h["pages"], "errors": h["errors"], "delay_s": h["delay_s"],
                "robots": h.get("robots", ""), "paused": h.get("paused", False),
                "backed_off": h["failures"] >= BACKED_OFF_FAILURES,
            })  # fmt: skip
        return {"total": len(order), "page": page, "per_page": per_page, "rows": rows}


def _eta(status: dict[str, Any], rates: dict[str, float], settings: dict[str, Any]) -> float | None:
    """Seconds to the crawl's end when it has a known bound: ``max_pages``,
    ``max_items``, ``max_seconds``, or a queue that is emptying. None if unknown."""
    if status["state"] == "finished":
        return 0.0
    stats, pages_rate = status["stats"], rates.get("pages", 0.0)
    etas: list[float] = []
    if settings.get("max_seconds"):
        etas.append(max(settings["max_seconds"] - status["elapsed_s"], 0.0))
    if settings.get("max_pages") and pages_rate > 0:
        etas.append(max(settings["max_pages"] - stats.get("pages", 0), 0) / pages_rate)
    if settings.get("max_items") and rates.get("items", 0.0) > 0:
        etas.append(max(settings["max_items"] - stats.get("items", 0), 0) / rates["items"])
    if not status.get("serving") and rates.get("queued", 0.0) < 0 and pages_rate > 0:
        etas.append((status["queued"] + status["in_flight"]) / pages_rate)
    return round(min(etas), 1) if etas else None


class Monitor:
    """A daemon thread that snapshots the frontier every ``every_s`` (the detailed
    snapshot, with every host, worker and dead letter, at most every ``detail_every_s``
    and never costing the frontier more than ``1/DETAIL_BUDGET`` of its time)."""

    #: A detailed snapshot that took t seconds under the lock waits at least this x t.
    DETAIL_BUDGET = 50

    def __init__(
        self,
        status: Callable[[bool], dict[str, Any]],
        settings: dict[str, Any],
        *,
        serving: bool = False,
        every_s: float = 0.5,
        detail_every_s: float = 2.0,
        rate_window_s: float = 5.0,
    ) -> None:
        self._status, self._settings, self._serving = status, settings, serving
        self.every_s, self.detail_every_s, self._window_s = every_s, detail_every_s, rate_window_s
        self.history = History()
        self._samples: list[tuple[float, int, int, int]] = []  # (t, pages, items, queued)
        self._detail: dict[str, Any] = {}
        self._detail_at = -1e18
        self._detail_wait_s = 0.0
        self._worker_pages: dict[str, tuple[float, int]] = {}
        self._worker_rates: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: View = self.take()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.latest = self.take()
            except Exception:  # a bug of ours: the console must not die of it, nor the crawl
                logger.exception("console: cannot take a snapshot; will retry")

    def take(self) -> View:
        """One snapshot of the frontier, with a detailed one when one is due."""
        now = time.monotonic()
        detail = None
        if now - self._detail_at >= max(self.detail_every_s, self._detail_wait_s):
            started = time.perf_counter()
            status = detail = self._status(True)
            self._detail_wait_s = (time.perf_counter() - started) * self.DETAIL_BUDGET
            self._detail_at = now
        else:
            status = self._status(False)
        status["serving"] = self._serving
        stats = status["stats"]
        pages, items = stats.get("pages", 0), stats.get("items", 0)
        errors = sum(errors_by_reason(stats).values())
        self.history.add(status["elapsed_s"], pages, errors)
        rates = self._rates(now, pages, items, status["queued"])
        if detail is not None:
            self._detail = detail
            self._note_workers(now, detail.get("worker_detail", {}))
        return View(
            status, self._detail, rates, self._worker_rates, self.history.points(),
            self._settings, self._serving, now,
        )  # fmt: skip

    def _rates(self, now: float, pages: int, items: int, queued: int) -> dict[str, float]:
        """Per-second rates over the last ``rate_window_s``."""
        samples = self._samples
        samples.append((now, pages, items, queued))
        while len(samples) > 2 and now - samples[1][0] >= self._window_s:
            samples.pop(0)
        t0, p0, i0, q0 = samples[0]
        dt = now - t0
        if dt <= 0:
            return {}
        return {
            "pages": (pages - p0) / dt,
            "items": (items - i0) / dt,
            "queued": (queued - q0) / dt,
        }

    def _note_workers(self, now: float, workers: dict[str, dict[str, Any]]) -> None:
        previous, self._worker_pages = self._worker_pages, {}
        for name, w in workers.items():
            pages = w.get("pages", 0)
            self._worker_pages[name] = (now, pages)
            before = previous.get(name)
            if before is not None and now > before[0]:
                self._worker_rates[name] = (pages - before[1]) / (now - before[0])
        for name in list(self._worker_rates):
            if name not in workers:
                del self._worker_rates[name]
