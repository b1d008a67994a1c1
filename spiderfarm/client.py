"""The one typed async client over the manager's proxies.

It speaks the BaseManager wire protocol (``create``, then ``accept_connection`` and
method calls) on connections of its own, because a stock proxy has no timeouts and is
unusable after an interrupted call. Calls block, so they run on this client's own thread,
never on the event loop; every socket read has a kernel timeout; after any error the
connection is thrown away and rebuilt on the next call.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from multiprocessing.managers import RemoteError
from typing import Any, cast

from .errors import ConnectError
from .frontier import Lease, Outcome

logger = logging.getLogger(__name__)

__all__ = ["FrontierClient"]

SERVICE = "frontier"


class FrontierClient:
    """Talks to one spiderfarm server; connects on first use."""

    def __init__(
        self,
        address: tuple[str, int],
        authkey: bytes,
        *,
        call_timeout_s: float = 30.0,
        give_up_s: float = 30.0,
    ) -> None:
        self.address = address
        self._authkey = authkey
        self.call_timeout_s = call_timeout_s
        self.give_up_s = give_up_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="frontier-client")
        # Touched only on the executor thread: the connection and the service's object id.
        self._conn: Connection | None = None
        self._ident: str | None = None

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    # -- on the executor thread ----------------------------------------------------
    def _open(self) -> Connection:
        """A new authenticated connection whose reads time out, so no call hangs forever."""
        sock = socket.create_connection(self.address, timeout=self.call_timeout_s)
        sock.settimeout(None)  # blocking again: the kernel timeouts below do the timing
        # Connection writes a header and a large payload separately: without NODELAY the
        # payload waits for the peer's delayed ACK of the header (40 ms a round trip).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seconds = int(self.call_timeout_s)
        micros = int((self.call_timeout_s - seconds) * 1e6)
        timeval = struct.pack("ll", seconds, micros)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        conn = Connection(sock.detach())
        try:
            answer_challenge(conn, self._authkey)
            deliver_challenge(conn, self._authkey)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_blocking(self) -> Connection:
        # The manager protocol: ``create`` names the shared service object, then
        # ``accept_connection`` turns a second connection into a method-call channel.
        conn = self._open()
        try:
            ident, _exposed = _dispatch(conn, "create", (SERVICE,))
        finally:
            conn.close()
        conn = self._open()
        try:
            _dispatch(conn, "accept_connection", ("worker",))
        except BaseException:
            conn.close()
            raise
        self._conn, self._ident = conn, ident
        return conn

    def _call_blocking(self, method: str, args: tuple[Any, ...]) -> Any:
        conn = self._conn or self._connect_blocking()
        try:
            conn.send((self._ident, method, args, {}))
            kind, result = conn.recv()
        except BaseException:
            self._drop_blocking()
            raise
        if kind == "#RETURN":
            return result
        if kind == "#ERROR":
            raise result
        raise RemoteError(f"server failed in {method}: {result}")

    def _drop_blocking(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- on the event loop ---------------------------------------------------------
    async def _run(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_blocking, method, args)

    async def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the server, reconnecting with capped backoff until
        ``give_up_s`` has passed.

        Raises:
            ConnectError: the server refused our authkey, or stayed unreachable.
        """
        deadline = time.monotonic() + self.give_up_s
        delay = 0.05
        while True:
            try:
                return await self._run(method, *args)
            except AuthenticationError:
                raise ConnectError(
                    f"the server at {self.where} refused our authkey: give the worker the "
                    "server's key with --authkey-file or SPIDERFARM_AUTHKEY"
                ) from None
            except (OSError, EOFError, TimeoutError) as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectError(
                        f"cannot reach the spiderfarm server at {self.where} after "
                        f"{self.give_up_s:.0f}s ({_describe(exc)}); is it running, and is "
                        "the address right?"
                    ) from None
                logger.info(
                    "server at %s unreachable (%s); retrying in %.2fs",
                    self.where,
                    _describe(exc),
                    delay,
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)

    async def hello(self, info: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self.call("hello", info))

    async def exchange(
        self, worker_id: str, outcomes: list[Outcome], want: int
    ) -> tuple[list[Lease], list[int], str]:
        return cast(
            tuple[list[Lease], list[int], str],
            await self.call("exchange", worker_id, outcomes, want),
        )

    async def status(self, detail: bool = False) -> dict[str, Any]:
        return cast(dict[str, Any], await self.call("status", detail))

    async def bye(self, worker_id: str) -> None:
        await self.call("bye", worker_id)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._drop_blocking)
        self._executor.shutdown(wait=False)


def _dispatch(conn: Connection, method: str, args: tuple[Any, ...]) -> Any:
    """One call to the manager itself (not to a shared object)."""
    conn.send((None, method, args, {}))
    kind, result = conn.recv()
    if kind == "#RETURN":
        return result
    raise RemoteError(f"server refused {method}: {result}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | BlockingIOError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, EOFError):
        return "connection closed"
    return f"{type(exc).__name__}: {exc}"
