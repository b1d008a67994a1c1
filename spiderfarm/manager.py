"""The manager's wire end: accept, authenticate, and serve worker connections.

Built on CPython's ``multiprocessing.managers.Server`` with its rough edges filed off:
the HMAC handshake has a timeout and runs off the accept loop, unauthenticated peers are
capped in number, logged (rate-limited) and dropped before anything is unpickled, and
only ``create`` and ``accept_connection`` are reachable (no remote ``shutdown``).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge
from multiprocessing.managers import Server
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ManagerServer"]


def _set_recv_timeout(conn: Connection, seconds: float) -> str:
    """Give the connection's socket a kernel receive timeout (0: none); returns the peer."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        # Replies are written as header + payload: see FrontierClient._open on NODELAY.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            host, port = sock.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"
    finally:
        sock.close()


class ManagerServer(Server):
    """Serves one registry of shared objects to authenticated workers."""

    public = ["create", "accept_connection"]  # noqa: RUF012 - overrides Server.public
    listener: Listener
    authkey: bytes

    def __init__(
        self,
        registry: dict[str, Any],
        address: tuple[str, int],
        authkey: bytes,
        *,
        handshake_timeout_s: float = 5.0,
        max_pending: int = 256,
        max_connections: int = 1024,
    ) -> None:
        super().__init__(registry, address, authkey, "pickle")
        # Server listens with a backlog of 16: a farm's workers (re)connecting at once
        # would see SYNs dropped and wait a second per retry. Listening again raises it.
        self.listener._listener._socket.listen(socket.SOMAXCONN)  # type: ignore[attr-defined]
        self.stop_event = threading.Event()  # serve_client() polls it
        self.handshake_timeout_s = handshake_timeout_s
        self._pending = threading.BoundedSemaphore(max_pending)
        self._open = threading.BoundedSemaphore(max_connections)
        self._auth_failures = 0
        self._last_auth_log = 0.0
        self._log_lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn = self.listener.accept()
            except OSError:
                if self.stop_event.is_set():
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: do not spin
                continue
            if not self._open.acquire(blocking=False):
                conn.close()  # over the connection cap: the peer retries later
                continue
            if not self._pending.acquire(blocking=False):
                self._open.release()
                conn.close()  # too many handshakes at once: likely a flood
                continue
            threading.Thread(target=self.handle_request, args=(conn,), daemon=True).start()

    def _authenticate(self, conn: Connection) -> bool:
        try:
            peer = _set_recv_timeout(conn, self.handshake_timeout_s)
            try:
                deliver_challenge(conn, self.authkey)
                answer_challenge(conn, self.authkey)
            except (AuthenticationError, OSError, EOFError) as exc:
                self._log_auth_failure(peer, exc)
                return False
            _set_recv_timeout(conn, 0)  # authenticated: a worker may stay idle for long
            return True
        finally:
            self._pending.release()

    def _log_auth_failure(self, peer: str, exc: BaseException) -> None:
        with self._log_lock:
            self._auth_failures += 1
            now = time.monotonic()
            if now - self._last_auth_log < 5.0:
                return
            self._last_auth_log = now
            total = self._auth_failures
        what = "timed out" if isinstance(exc, OSError | EOFError) else "failed"
        logger.warning(
            "authentication %s for peer %s (%d failed so far): wrong authkey or not a "
            "spiderfarm worker", what, peer, total,
        )  # fmt: skip

    def handle_request(self, conn: Connection) -> None:
        """Authenticate, then serve the one manager call a connection opens with."""
        try:
            if not self._authenticate(conn):
                return
            request = conn.recv()  # authenticated: pickle from here on is trusted
            _, funcname, args, kwds = request
            if funcname not in self.public:
                conn.send(("#TRACEBACK", f"{funcname!r} is not available to workers"))
                return
            try:
                result = getattr(self, funcname)(conn, *args, **kwds)
            except Exception as exc:
                conn.send(("#TRACEBACK", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("#RETURN", result))
        except SystemExit:
            pass  # serve_client() exits this way when its peer goes away
        except Exception as exc:
            logger.debug("connection dropped: %s", exc)
        finally:
            conn.close()
            self._open.release()
