"""The crawl's cookie jars: the frontier's copy, which every worker's copy follows.

A worker reports the changes its responses made to a jar (``CookieChange``) in the
exchange that acks them; each change bumps the jar's version. An exchange then sends the
worker the whole jar (``JarUpdates``) of each jar it is leased a request of, or holds,
whose version it lacks. So a login made on one worker is in every other worker's jar by
its next exchange, and a jar outlives the worker that made it. Caps (``security``) bound
what a hostile worker can make the server hold.

No lock here: the frontier calls all of this under its own.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ..protocol import (
    MAX_COOKIE_STORE_BYTES,
    MAX_COOKIES_PER_JAR,
    MAX_JARS,
    W_META,
    CookieChange,
    CookieData,
    JarData,
    JarId,
    JarUpdates,
    Lease,
    cookie_size,
    jar_of,
)

logger = logging.getLogger("spiderfarm.frontier")

__all__ = ["Jars"]


class Jars:
    """Every cookie jar of the crawl, their versions, and what each worker was sent."""

    __slots__ = (
        "_counts", "_dirty", "_holders", "_jars", "_sent", "_sizes", "_stale", "_stats",
        "_total", "_versions", "_warned",
    )  # fmt: skip

    def __init__(self, stats: Counter[str]) -> None:
        self._stats = stats
        self._jars: dict[JarId, JarData] = {}
        self._versions: dict[JarId, int] = {}
        self._counts: dict[JarId, int] = {}  # cookies in each jar
        self._sizes: dict[tuple[JarId, str, str], int] = {}  # each cookie's size
        self._total = 0  # bytes of all cookies (the cap is MAX_COOKIE_STORE_BYTES)
        self._sent: dict[str, dict[JarId, int]] = {}  # worker -> jar -> version it has
        self._holders: dict[JarId, set[str]] = {}  # jar -> workers that have a copy
        self._stale: dict[str, set[JarId]] = {}  # worker -> its jars changed since sent
        self._dirty: set[JarId] = set()  # jars changed since the last checkpoint
        self._warned = False

    def __bool__(self) -> bool:
        return bool(self._jars)

    def apply(self, changes: Sequence[CookieChange]) -> None:
        """Apply a worker's cookie changes (already checked by ``security``)."""
        changed: set[JarId] = set()
        for jar_id, compound, name, cookie in changes:
            if self._apply_one(jar_id, compound, name, cookie):
                changed.add(jar_id)
        for jar_id in changed:
            self._versions[jar_id] = self._versions.get(jar_id, 0) + 1
            self._dirty.add(jar_id)
            for worker in self._holders.get(jar_id, ()):
                self._stale.setdefault(worker, set()).add(jar_id)
        if changes:
            self._stats["cookies/changes"] += len(changes)

    def _apply_one(
        self, jar_id: JarId, compound: str, name: str, cookie: CookieData | None
    ) -> bool:
        jar = self._jars.get(jar_id)
        key = (jar_id, compound, name)
        old = self._sizes.get(key)
        if cookie is None:
            if jar is None or old is None:
                return False
            group = jar[compound]
            del group[name]
            if not group:
                del jar[compound]
            self._forget(key, old)
            return True
        size = cookie_size(compound, name, cookie)
        if jar is None:
            if len(self._jars) >= MAX_JARS:
                return self._refuse(f"over {MAX_JARS} cookie jars", jar_id)
            jar = self._jars[jar_id] = {}
        if old is None and self._counts.get(jar_id, 0) >= MAX_COOKIES_PER_JAR:
            return self._refuse(f"over {MAX_COOKIES_PER_JAR} cookies in one jar", jar_id)
        if self._total - (old or 0) + size > MAX_COOKIE_STORE_BYTES:
            return self._refuse(f"over {MAX_COOKIE_STORE_BYTES} bytes of cookies", jar_id)
        jar.setdefault(compound, {})[name] = cookie
        if old is None:
            self._counts[jar_id] = self._counts.get(jar_id, 0) + 1
        self._sizes[key] = size
        self._total += size - (old or 0)
        return True

    def _forget(self, key: tuple[JarId, str, str], size: int) -> None:
        del self._sizes[key]
        self._total -= size
        self._counts[key[0]] -= 1

    def _refuse(self, why: str, jar_id: JarId) -> bool:
        self._stats["cookies/dropped"] += 1
        if not self._warned:
            self._warned = True
            logger.warning("dropping cookies (first in jar %r): %s", jar_id, why)
        return False

    def updates(self, worker: str, leases: Iterable[Lease]) -> JarUpdates:
        """The jars ``worker`` should take now: those of these leases, and those it holds
        that changed, whose version it lacks. Copies: they are pickled after the lock."""
        if not self._jars:
            return {}
        sent = self._sent.get(worker)
        if sent is None:
            sent = self._sent[worker] = {}
        wanted = self._stale.pop(worker, set())
        versions = self._versions
        for lease in leases:
            meta = lease[2][W_META]
            jar_id = jar_of(meta)
            if jar_id in versions and sent.get(jar_id) != versions[jar_id]:
                wanted.add(jar_id)
        out: JarUpdates = {}
        for jar_id in wanted:
            version = versions.get(jar_id)
            if version is None or sent.get(jar_id) == version:
                continue
            sent[jar_id] = version
            self._holders.setdefault(jar_id, set()).add(worker)
            out[jar_id] = (version, _copy(self._jars[jar_id]))
        return out

    def forget_worker(self, worker: str) -> None:
        """A worker is gone: stop tracking what it holds."""
        for jar_id in self._sent.pop(worker, {}):
            holders = self._holders.get(jar_id)
            if holders is not None:
                holders.discard(worker)
        self._stale.pop(worker, None)

    def take_dirty(self) -> list[tuple[Any, ...]]:
        """Journal ops for the jars changed since the last call: ("jar", id, cookies)."""
        ops = [("jar", jar_id, _copy(self._jars.get(jar_id, {}))) for jar_id in self._dirty]
        self._dirty.clear()
        return ops

    def restore(self, jars: Iterable[tuple[JarId, JarData]]) -> None:
        """Load a journal's jars (expired cookies are left out)."""
        now = time.time()
        for jar_id, data in jars:
            changes: list[CookieChange] = []
            for compound, group in data.items():
                for name, cookie in group.items():
                    when = cookie.get("expires_timestamp")
                    if not (isinstance(when, int | float) and when <= now):
                        changes.append((jar_id, compound, name, cookie))
            for change in changes:
                self._apply_one(*change)
            if jar_id in self._jars:
                self._versions[jar_id] = 1

    def cookies(self, jar_id: JarId = None) -> JarData:
        """One jar's cookies (a copy), for status and tests."""
        return _copy(self._jars.get(jar_id, {}))

    def detail(self) -> dict[str, int]:
        return {"jars": len(self._jars), "cookies": len(self._sizes), "bytes": self._total}


def _copy(jar: JarData) -> JarData:
    # Cookies are replaced, never changed in place: two levels of copying suffice.
    return {compound: dict(group) for compound, group in jar.items()}
