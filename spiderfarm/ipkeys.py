"""politeness_key=ip: key each request by its host's IP address, looking each host up once.

The rule itself (IP literals are their own key, the first IPv4 address else the first
IPv6, a host that does not resolve keyed by its name) lives in ``urls``; here are the two
lookup strategies: ``IpKeys`` on a worker's event loop (it never waits on DNS), and
``BlockingIpKeys`` for the server's start requests (threads, no event loop).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .protocol import W_URL, PushEntry
from .urls import authority_of, host_of, ip_key_from_addrinfo, ip_key_of, lookup_address

logger = logging.getLogger(__name__)

__all__ = ["BlockingIpKeys", "IpKeys"]

# A host that did not resolve is keyed by its name for this long before it is looked up
# again (its links meanwhile cost no lookup).
LOOKUP_RETRY_S = 60.0


class IpKeys:
    """Fills in the keys ``ip_key_nowait`` left empty, on the event loop: each distinct
    host once, all of a batch at once, one lookup shared by every caller meanwhile.

    ``keys`` is the worker's cache of keys by ``scheme://authority`` (shared, so that a
    host looked up once needs no lookup when its next link is collected).
    """

    def __init__(self, keys: dict[str, str], timeout_s: float) -> None:
        self._keys = keys
        self._timeout_s = timeout_s
        self._lookups: dict[str, asyncio.Future[str]] = {}  # in progress
        self._unresolved: dict[str, float] = {}  # authority -> when to try again

    async def fill(self, requests: list[PushEntry]) -> None:
        pending: dict[str, str] = {}  # authority -> a URL with it
        for _, key, wire in requests:
            if not key:
                url = wire[W_URL]
                pending.setdefault(authority_of(url), url)
        if not pending:
            return
        keys = await asyncio.gather(*(self._key(a, url) for a, url in pending.items()))
        found = dict(zip(pending, keys, strict=True))
        for i, (fp, key, wire) in enumerate(requests):
            if not key:
                requests[i] = (fp, found[authority_of(wire[W_URL])], wire)

    async def _key(self, authority: str, url: str) -> str:
        """The IP key of ``authority``: cached, or from one lookup shared by every slot
        that asks meanwhile; the host name (``host_of``) if it does not resolve."""
        key = self._keys.get(authority)
        if key:
            return key
        if self._unresolved.get(authority, 0.0) > time.monotonic():
            return host_of(url)
        lookup = self._lookups.get(authority)
        if lookup is None:
            lookup = self._lookups[authority] = asyncio.ensure_future(self._lookup(authority, url))
            lookup.add_done_callback(lambda _: self._lookups.pop(authority, None))
        # Shielded: a slot cancelled while it waits must not cancel the others' lookup.
        return await asyncio.shield(lookup)

    async def _lookup(self, authority: str, url: str) -> str:
        host, port = lookup_address(url)
        try:
            async with asyncio.timeout(self._timeout_s):
                loop = asyncio.get_running_loop()
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError, TimeoutError) as exc:
            logger.debug("politeness key: cannot resolve %s (%s); keyed by its name", host, exc)
            infos = []
        key = ip_key_from_addrinfo(infos)
        if not key:
            if len(self._unresolved) > 10_000:
                self._unresolved.clear()
            self._unresolved[authority] = time.monotonic() + LOOKUP_RETRY_S
            return host_of(url)
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[authority] = key
        return key


class BlockingIpKeys:
    """The same for the start requests, on the server: blocking lookups (``ip_key_of``)
    in threads, once per scheme+authority, several at a time."""

    def __init__(self, max_lookups: int = 16) -> None:
        self._keys: dict[str, str] = {}  # scheme://authority -> key, while seeding
        self._max_lookups = max_lookups

    def fill(self, entries: Sequence[PushEntry]) -> list[PushEntry]:
        todo: dict[str, str] = {}  # authority -> a URL with it
        for _, key, wire in entries:
            if not key:
                authority = authority_of(wire[W_URL])
                if authority not in self._keys:
                    todo.setdefault(authority, wire[W_URL])
        if todo:
            with ThreadPoolExecutor(min(len(todo), self._max_lookups)) as pool:
                self._keys.update(zip(todo, pool.map(ip_key_of, todo.values()), strict=True))
        return [
            (fp, key or self._keys[authority_of(wire[W_URL])], wire) for fp, key, wire in entries
        ]
