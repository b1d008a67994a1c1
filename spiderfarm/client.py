"""The one typed async client over the manager's protocol.

It speaks the BaseManager wire protocol (``create``, then ``accept_connection`` and
method calls) on connections of its own, because a stock proxy has no timeouts and is
unusable after an interrupted call. The authentication handshake blocks, so it runs on
this client's own thread with kernel timeouts on every read; the method calls then run on
the event loop itself (asyncio streams, the manager's length-prefixed pickle frames), so
a round trip costs no thread hand-off. After any error, timeout or cancellation the
connection is thrown away and rebuilt on the next call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from multiprocessing.managers import RemoteError
from multiprocessing.reduction import ForkingPickler
from typing import Any, cast

from .errors import ConnectError
from .protocol import SERVICE, CookieChange, JarUpdates, Lease, Outcome

logger = logging.getLogger(__name__)

__all__ = ["FrontierClient"]


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
        # The method-call channel (on the event loop) and the service's object id.
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
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

    def _connect_blocking(self) -> tuple[str, socket.socket]:
        # The manager protocol: ``create`` names the shared service object, then
        # ``accept_connection`` turns a second connection into a method-call channel,
        # handed back as a non-blocking socket for the event loop.
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
        try:
            sock = socket.socket(fileno=os.dup(conn.fileno()))  # family read from the fd
        finally:
            conn.close()
        sock.setblocking(False)
        return cast(str, ident), sock

    # -- on the event loop ---------------------------------------------------------
    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        ident, sock = await loop.run_in_executor(self._executor, self._connect_blocking)
        try:
            streams = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        self._ident, self._streams = ident, streams
        return streams

    async def _run(self, method: str, *args: Any) -> Any:
        """One call: a pickled ``(ident, method, args, kwargs)`` frame out, one frame back."""
        reader, writer = self._streams or await self._connect()
        data = ForkingPickler.dumps((self._ident, method, args, {}))
        size = len(data)
        # multiprocessing.connection framing: a 4-byte signed length, or -1 and 8 bytes.
        header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        try:
            async with asyncio.timeout(self.call_timeout_s):
                writer.write(header + data)
                await writer.drain()
                (size,) = struct.unpack("!i", await reader.readexactly(4))
                if size == -1:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(size)
        except BaseException:  # timed out, reset or cancelled mid-call: the stream is spent
            self._drop()
            raise
        kind, result = pickle.loads(payload)
        if kind == "#RETURN":
            return result
        if kind == "#ERROR":
            raise result
        raise RemoteError(f"server failed in {method}: {result}")

    def _drop(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()

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

    async def exchange_sessions(
        self, worker_id: str, outcomes: list[Outcome], want: int, cookies: list[CookieChange]
    ) -> tuple[list[Lease], list[int], str, JarUpdates]:
        """``exchange``, carrying this worker's cookie changes; also answers the cookie
        jars it should take (see ``frontier.sessions``)."""
        return cast(
            tuple[list[Lease], list[int], str, JarUpdates],
            await self.call("exchange", worker_id, outcomes, want, cookies),
        )

    async def heartbeat(self, worker_id: str, lag_s: float) -> None:
        await self.call("heartbeat", worker_id, lag_s)

    def clone(self, *, call_timeout_s: float | None = None) -> FrontierClient:
        """Another client to the same server, with connections of its own."""
        return FrontierClient(
            self.address,
            self._authkey,
            call_timeout_s=call_timeout_s or self.call_timeout_s,
            give_up_s=self.give_up_s,
        )

    async def status(self, detail: bool = False) -> dict[str, Any]:
        return cast(dict[str, Any], await self.call("status", detail))

    async def bye(self, worker_id: str) -> None:
        await self.call("bye", worker_id)

    async def close(self) -> None:
        self._drop()
        self._executor.shutdown(wait=False)


def _dispatch(conn: Connection, method: str, args: tuple[Any, ...]) -> Any:
    """One call to the manager itself (not to a shared object)."""
    conn.send((None, method, args, {}))
    kind, result = conn.recv()
    if kind == "#RETURN":
        return result
    # Not a refusal of our data: the peer is not (or not yet) a spiderfarm server that
    # serves us. An OSError, so call() retries it with backoff like any connection error.
    raise ConnectionError(f"server refused {method}: {str(result).strip()[-200:]}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | BlockingIOError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, EOFError):
        return "connection closed"
    return f"{type(exc).__name__}: {exc}"
