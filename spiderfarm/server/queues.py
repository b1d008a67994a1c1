"""Service mode's two queues, as any ``BaseManager`` client reaches them: the task queue
(``get_task_queue``: put URLs or request dicts into the running crawl) and the result
queue (``get_result_queue``: one result per finished request, as a plain dict).

Tasks are checked here, on the server, as strictly as a spider's own requests are, and
a bad one is refused with a ``ValueError`` naming its field and the fix: nothing
half-valid reaches the frontier.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..frontier import Frontier
from ..frontier.results import Results, result_dict
from ..manager import on_reply_lost, peer_alive
from ..protocol import (
    INT64_MAX,
    INT64_MIN,
    MAX_BATCH,
    PushEntry,
    check_request_fields,
)
from ..request import Request
from ..spider import Spider
from ..urls import Fingerprinter

__all__ = [
    "RESULT_EXPOSED",
    "RESULT_QUEUE",
    "TASK_EXPOSED",
    "TASK_FIELDS",
    "TASK_QUEUE",
    "ResultQueue",
    "TaskQueue",
    "Tasks",
]

TASK_QUEUE: Final = "get_task_queue"
RESULT_QUEUE: Final = "get_result_queue"
TASK_EXPOSED: Final = ("put", "put_nowait", "put_many", "qsize", "empty")
RESULT_EXPOSED: Final = ("get", "get_nowait", "get_many", "qsize", "empty")

#: What a task dict may hold (``url`` is required), as ``Request`` names it.
TASK_FIELDS: Final = (
    "url", "callback", "method", "headers", "body", "meta", "priority", "dont_filter",
    "cb_kwargs", "errback",
)  # fmt: skip
_HOW: Final = "a task is a URL string or a dict with 'url' and any of " + ", ".join(TASK_FIELDS[1:])


def _plain(value: Any, what: str) -> None:
    """``meta`` and ``cb_kwargs`` travel as plain data: what JSON can hold."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(
            f"{what} must hold plain data (str, int, float, bool, None, lists and dicts "
            f"with str keys): {exc}"
        ) from None


class Tasks:
    """Turns what clients put into checked push entries, as the spider's own requests
    are: same URL rules, the spider's callbacks, the caps on headers, meta and size."""

    def __init__(
        self,
        spider: Spider,
        key_of: Callable[[str], str],
        fill: Callable[[list[PushEntry]], list[PushEntry]] | None = None,
    ) -> None:
        self.spider = spider
        self._key_of = key_of
        self._fill = fill
        self._fingerprinter = Fingerprinter()
        self._lock = threading.Lock()  # the fingerprinter's and the ip lookups' caches

    def entry(self, task: Any, where: str = "task") -> PushEntry:
        """One task as a push entry.

        Raises:
            ValueError: naming the field that is wrong and what to do.
        """
        if isinstance(task, str):
            task = {"url": task}
        elif not isinstance(task, dict):
            raise ValueError(f"{where}: got {type(task).__name__}; {_HOW}")
        unknown = sorted(str(k) for k in task if k not in TASK_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}; {_HOW}")
        if "url" not in task:
            raise ValueError(f"{where}: no 'url'; {_HOW}")
        url = task["url"]
        if not isinstance(url, str):
            raise ValueError(f"{where}: 'url' must be a string, got {type(url).__name__}")
        for name in ("callback", "errback"):
            value = task.get(name)
            if value is not None and not (
                isinstance(value, str) and callable(getattr(self.spider, value, None))
            ):
                raise ValueError(
                    f"{where}: {name} {value!r} is not a method of spider "
                    f"{self.spider.name!r}; name one of its methods (such as 'parse') or "
                    "leave it out"
                )
        method = task.get("method", "GET")
        if not isinstance(method, str):
            raise ValueError(f"{where}: 'method' must be a string such as 'GET' or 'POST'")
        headers = task.get("headers")
        if headers is not None and not (
            isinstance(headers, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise ValueError(f"{where}: 'headers' must be a dict of str to str")
        body = task.get("body")
        if body is not None and not isinstance(body, str | bytes):
            raise ValueError(f"{where}: 'body' must be str or bytes")
        for name in ("meta", "cb_kwargs"):
            value = task.get(name)
            if value is not None:
                if not isinstance(value, dict):
                    raise ValueError(f"{where}: {name!r} must be a dict")
                _plain(value, f"{where}: {name!r}")
        priority = task.get("priority", 0)
        if type(priority) is not int or not INT64_MIN <= priority <= INT64_MAX:
            raise ValueError(f"{where}: 'priority' must be an int (a signed 64-bit one)")
        dont_filter = task.get("dont_filter", False)
        if type(dont_filter) is not bool:
            raise ValueError(f"{where}: 'dont_filter' must be true or false")
        try:
            request = Request(
                url,
                callback=task.get("callback"),
                method=method,
                headers=headers,
                body=body,
                meta=task.get("meta"),
                priority=priority,
                dont_filter=dont_filter,
                cb_kwargs=task.get("cb_kwargs"),
                errback=task.get("errback"),
            )
            wire = request.to_wire()
            check_request_fields(wire)
        except ValueError as exc:
            message = str(exc).removeprefix("refused malformed exchange from worker: ")
            raise ValueError(f"{where}: {message}") from None
        with self._lock:
            fp = self._fingerprinter.fingerprint(request.url, request.method, request.body)
            return (fp, self._key_of(request.url), wire)

    def entries(
        self, tasks: Sequence[Any], single: bool = False
    ) -> tuple[list[PushEntry], list[tuple[int, str]]]:
        """The good tasks as entries, and (index, message) for each bad one (each message
        starts ``task: ``); ``single`` raises for a bad task instead.

        Raises:
            ValueError: with ``single``, the task is malformed.
        """
        good: list[PushEntry] = []
        bad: list[tuple[int, str]] = []
        for i, task in enumerate(tasks):
            try:
                good.append(self.entry(task))
            except ValueError as exc:
                if single:
                    raise
                bad.append((i, str(exc)))
        if self._fill is not None and good:
            with self._lock:
                good = self._fill(good)
        return good, bad


class TaskQueue:
    """``get_task_queue()``: Queue-like; ``put`` queues a task in the running crawl."""

    def __init__(self, frontier: Frontier, tasks: Tasks) -> None:
        self._frontier = frontier
        self._tasks = tasks

    def put(self, task: Any, block: bool = True, timeout: float | None = None) -> None:
        """Queue one task (a URL or a request dict); never blocks (``block`` and
        ``timeout`` are accepted as ``queue.Queue.put`` takes them). A duplicate, offsite
        or robots-disallowed URL is accepted and gives a result saying so.

        Raises:
            ValueError: the task is malformed; the message names the field.
        """
        entries, _ = self._tasks.entries([task], single=True)
        self._frontier.submit(entries)

    def put_nowait(self, task: Any) -> None:
        self.put(task, block=False)

    def put_many(self, tasks: list[Any]) -> dict[str, Any]:
        """Queue a batch of tasks in one call. Returns ``accepted`` (how many were
        queued), ``urls`` (theirs, in the safe form their results name them by),
        ``filtered`` (``[url, reason]`` for each not queued: each has its result too) and
        ``refused`` (``[index, message]`` for each malformed one: nothing queued)."""
        if not isinstance(tasks, list) or len(tasks) > MAX_BATCH:
            raise ValueError(f"put_many takes a list of at most {MAX_BATCH} tasks")
        entries, bad = self._tasks.entries(tasks)
        accepted, filtered = self._frontier.submit(entries) if entries else ([], [])
        return {
            "accepted": len(accepted),
            "urls": accepted,
            "filtered": [list(f) for f in filtered],
            "refused": [list(b) for b in bad],
        }

    def qsize(self) -> int:
        """Requests queued in the crawl (not yet leased to a worker)."""
        return self._frontier.queued

    def empty(self) -> bool:
        return self.qsize() == 0


class ResultQueue:
    """``get_result_queue()``: Queue-like; ``get`` takes the next result as a dict."""

    def __init__(self, results: Results) -> None:
        self._results = results

    def _take(self, block: bool, timeout: float | None, most: int) -> list[dict[str, Any]]:
        if timeout is not None and (
            type(timeout) not in (int, float) or math.isnan(timeout) or timeout < 0
        ):
            raise ValueError("'timeout' must be a non-negative number")
        results = self._results
        taken = results.get(block, timeout, alive=peer_alive, most=most)
        on_reply_lost(lambda: results.unget(taken))  # a vanished client loses nothing
        return [result_dict(r) for r in taken]

    def get(self, block: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """The next result, waiting as ``queue.Queue.get`` does.

        Raises:
            queue.Empty: nothing came in ``timeout`` (at once with ``block=False``).
        """
        return self._take(bool(block), timeout, 1)[0]

    def get_nowait(self) -> dict[str, Any]:
        return self.get(block=False)

    def get_many(self, most: int = 1000, timeout: float | None = None) -> list[dict[str, Any]]:
        """Up to ``most`` results in one call, waiting up to ``timeout`` for the first;
        an empty list if none came."""
        if type(most) is not int or not 1 <= most <= MAX_BATCH:
            raise ValueError(f"'most' must be an int in 1..{MAX_BATCH}")
        try:
            return self._take(True, timeout, most)
        except queue.Empty:
            return []

    def qsize(self) -> int:
        return self._results.qsize()

    def empty(self) -> bool:
        return self._results.qsize() == 0
