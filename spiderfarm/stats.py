"""``spider.stats``: Scrapy's StatsCollector API for spiders and pipelines, farm-wide.

Each process keeps its own view (``get_value``) and the changes not sent yet
(``pending``); the worker sends those with its next outcome, as notes
(``protocol.stat_note``), and the frontier merges every worker's: ``inc_value`` adds,
``max_value``/``min_value`` combine, ``set_value``: the last writer wins. Values are
numbers (Prometheus and the console show them). Nothing here costs a page that uses no
stats: the worker only looks at ``pending``.
"""

from __future__ import annotations

import math
from typing import Any

from .protocol import MAX_STAT_KEY_CHARS, MAX_STAT_NOTES_CHARS, StatOp, stat_note

__all__ = ["SpiderStats"]

#: Ops kept for one key between two sends before they collapse into one ``set``.
_MAX_OPS_PER_KEY = 4


def _check(key: Any, value: Any, what: str) -> float:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_STAT_KEY_CHARS:
        raise ValueError(
            f"spider stat key {key!r:.60}: must be a string of 1..{MAX_STAT_KEY_CHARS} characters"
        )
    if type(value) not in (int, float, bool) or not math.isfinite(value):
        raise TypeError(
            f"spider stat {key!r}: {what} must be a finite int or float, not {value!r:.60}; "
            "spiderfarm's stats are numbers (the console and /metrics show them)"
        )
    return int(value) if type(value) is bool else value


class SpiderStats:
    """``inc_value``/``set_value``/``max_value``/``min_value``/``get_value``/``get_stats``
    (Scrapy's names; ``inc``/``set``/``max``/``min``/``get`` are short aliases).

    ``get_value`` reads this process's view: what its own calls made, not the farm's
    total (that is in ``status``, the console and ``/metrics``).
    """

    __slots__ = ("_local", "pending")

    def __init__(self) -> None:
        self._local: dict[str, float] = {}
        #: key -> ops not sent yet, in order (merged where they can be).
        self.pending: dict[str, list[tuple[StatOp, float]]] = {}

    def _record(self, key: str, op: StatOp, value: float) -> None:
        ops = self.pending.get(key)
        if ops is None:
            self.pending[key] = [(op, value)]
            return
        last_op, last = ops[-1]
        if op == last_op and op != "~":
            merged = {"+": last + value, "=": value, ">": max(last, value), "<": min(last, value)}
            ops[-1] = (op, merged[op])
        elif op == "=":
            ops[:] = [(op, value)]  # a set makes what came before it moot
        elif len(ops) >= _MAX_OPS_PER_KEY:
            ops[:] = [("=", self._local[key])]
        else:
            ops.append((op, value))

    def get_value(self, key: str, default: Any = None) -> Any:
        return self._local.get(key, default)

    def get_stats(self) -> dict[str, float]:
        return dict(self._local)

    def inc_value(self, key: str, count: float = 1, start: float = 0) -> None:
        count = _check(key, count, "the count")
        local = self._local
        if key not in local and start:
            start = _check(key, start, "start")
            self._record(key, "~", start)
            local[key] = start
        local[key] = local.get(key, 0) + count
        self._record(key, "+", count)

    def set_value(self, key: str, value: float) -> None:
        value = _check(key, value, "the value")
        self._local[key] = value
        self._record(key, "=", value)

    def max_value(self, key: str, value: float) -> None:
        value = _check(key, value, "the value")
        self._local[key] = max(self._local.get(key, value), value)
        self._record(key, ">", value)

    def min_value(self, key: str, value: float) -> None:
        value = _check(key, value, "the value")
        self._local[key] = min(self._local.get(key, value), value)
        self._record(key, "<", value)

    inc = inc_value
    set = set_value
    max = max_value
    min = min_value
    get = get_value

    def take_notes(self, budget: int = MAX_STAT_NOTES_CHARS) -> str:
        """The pending changes as notes, at most ``budget`` characters (whole keys: what
        does not fit stays pending for the next outcome); they are no longer pending."""
        notes: list[str] = []
        used = 0
        pending = self.pending
        for key in list(pending):
            encoded = [stat_note(op, key, value) for op, value in pending[key]]
            size = sum(len(n) + 1 for n in encoded)
            if used + size > budget and notes:
                break
            notes += encoded
            used += size
            del pending[key]
        return ",".join(notes)

    def __repr__(self) -> str:
        return f"<SpiderStats {self._local!r}>"
