"""A client of a serving farm (``--serve``): submit work, read results.

``connect(address, authkey)`` gives a ``FarmClient`` over the farm's two queues, the
same ``get_task_queue``/``get_result_queue`` any ``BaseManager`` client reaches, with
batching on top: ``submit`` sends up to ``batch`` tasks per round trip (``put_many``) and
``results`` takes up to ``batch`` results per round trip (``get_many``). Usable from
plain code, and from asyncio code through ``asubmit`` and ``aresults`` (the blocking
calls run in a thread).

Only the standard library and ``spiderfarm.security`` are imported here: a producer or
consumer process loads no aiohttp, no lxml.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from multiprocessing.managers import BaseManager, RemoteError
from typing import Any

from .errors import ConnectError
from .security import AUTHKEY_ENV, decode_key, load_authkey, parse_address

__all__ = ["FarmClient", "Submitted", "connect"]

#: Tasks per ``put_many`` and results per ``get_many``: one round trip each.
BATCH = 1000


def _nodelay_client(address: Any, authkey: bytes | None = None) -> Connection:
    """``multiprocessing.connection.Client`` with TCP_NODELAY: a message over 16 KiB is
    written as header, then payload, and Nagle's algorithm would hold the payload until
    the header's (delayed) ACK, some 40 ms a call."""
    conn = Client(address, authkey=authkey)
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


class _QueueManager(BaseManager):
    pass


_QueueManager.register("get_task_queue")
_QueueManager.register("get_result_queue")


@dataclass(slots=True)
class Submitted:
    """What ``submit`` did: how many tasks were queued, which were filtered out (each
    has a result saying why: ``[url, reason]``), and which were refused as malformed
    (``[index, message]``, nothing queued for them)."""

    accepted: int = 0
    urls: list[str] = field(default_factory=list)  # the accepted ones, as results name them
    filtered: list[list[Any]] = field(default_factory=list)
    refused: list[list[Any]] = field(default_factory=list)

    def add(self, answer: dict[str, Any], offset: int) -> None:
        self.accepted += int(answer["accepted"])
        self.urls += answer["urls"]
        self.filtered += answer["filtered"]
        self.refused += [[offset + i, message] for i, message in answer["refused"]]


class FarmClient:
    """The two queues of one serving farm, batched."""

    def __init__(self, manager: BaseManager, address: tuple[str, int], batch: int) -> None:
        self.address = address
        self.batch = batch
        self._manager = manager
        self.tasks: Any = manager.get_task_queue()  # type: ignore[attr-defined]
        self.result_queue: Any = manager.get_result_queue()  # type: ignore[attr-defined]
        for proxy in (self.tasks, self.result_queue):
            proxy._Client = _nodelay_client  # the connection each thread's calls open

    def submit(self, tasks: Iterable[str | dict[str, Any]]) -> Submitted:
        """Queue tasks (URLs, or request dicts: ``url``, ``callback``, ``method``,
        ``headers``, ``body``, ``meta``, ``priority``, ``dont_filter``, ``cb_kwargs``),
        ``batch`` per round trip; any iterable, read as it goes."""
        done = Submitted()
        batch: list[str | dict[str, Any]] = []
        sent = 0
        for task in tasks:
            batch.append(task)
            if len(batch) >= self.batch:
                done.add(self.tasks.put_many(batch), sent)
                sent += len(batch)
                batch = []
        if batch:
            done.add(self.tasks.put_many(batch), sent)
        return done

    def results(
        self, timeout: float | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Results as they come, each a dict (``url``, ``ok``, ``status``, ``reason``,
        ``items``, ``meta``, ``root``); ends after ``limit`` results, or when none came
        for ``timeout`` seconds (None: waits for ever)."""
        got = 0
        while limit is None or got < limit:
            most = self.batch if limit is None else min(self.batch, limit - got)
            taken = self.result_queue.get_many(most, timeout)
            if not taken:
                return
            got += len(taken)
            yield from taken

    def queued(self) -> int:
        """Requests queued in the farm, not yet leased."""
        return int(self.tasks.qsize())

    def waiting_results(self) -> int:
        """Results waiting in the result queue."""
        return int(self.result_queue.qsize())

    async def asubmit(self, tasks: Iterable[str | dict[str, Any]]) -> Submitted:
        """``submit`` for asyncio code (in a thread: the event loop is not blocked)."""
        return await asyncio.to_thread(self.submit, list(tasks))

    async def aresults(
        self, timeout: float | None = None, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``results`` for asyncio code: each batch is waited for in a thread."""
        got = 0
        while limit is None or got < limit:
            most = self.batch if limit is None else min(self.batch, limit - got)
            taken = await asyncio.to_thread(self.result_queue.get_many, most, timeout)
            if not taken:
                return
            got += len(taken)
            for result in taken:
                yield result


def connect(
    address: str | tuple[str, int],
    authkey: bytes | str | None = None,
    *,
    authkey_file: str | None = None,
    batch: int = BATCH,
) -> FarmClient:
    """Connect to a farm started with ``--serve``.

    ``address`` is ``"HOST:PORT"`` or ``(host, port)``; the key is ``authkey`` (bytes as
    the server uses them, or the text of a key file), else read from ``authkey_file``,
    else from ``SPIDERFARM_AUTHKEY``.

    Raises:
        ConnectError: the farm cannot be reached, the key is wrong, or it does not serve
            the queues (started without ``--serve``).
        SettingsError: no key was given, or its file cannot be read.
    """
    where = address if isinstance(address, tuple) else parse_address(address)
    if isinstance(authkey, str):
        key: bytes | None = decode_key(authkey)
    elif authkey is not None:
        key = bytes(authkey)
    else:
        key = load_authkey(authkey_file, os.environ.get(AUTHKEY_ENV))
    if not key:
        raise ConnectError(
            f"no authkey for {where[0]}:{where[1]}: pass authkey=..., authkey_file=... "
            f"or set {AUTHKEY_ENV}"
        )
    if not 1 <= batch <= 10_000:
        raise ValueError("batch must be in 1..10000")
    manager = _QueueManager(address=where, authkey=key)
    manager._Client = _nodelay_client  # type: ignore[attr-defined]
    name = f"{where[0]}:{where[1]}"
    try:
        manager.connect()
        return FarmClient(manager, where, batch)
    except AuthenticationError:
        raise ConnectError(f"{name} refused the authkey: use the farm's key file") from None
    except OSError as exc:
        raise ConnectError(f"cannot reach a farm at {name}: {exc.strerror or exc}") from None
    except RemoteError as exc:  # the server's own words, such as "not served here"
        raise ConnectError(f"{name}: {str(exc.args[0]).strip()}") from None
