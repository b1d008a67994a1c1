"""The manager's wire end: accept, authenticate, and serve worker connections.

Built on CPython's ``multiprocessing.managers.Server`` with its rough edges filed off:
the HMAC handshake runs off the accept loop against one deadline for the whole exchange,
unauthenticated peers are capped in number, dropped before anything is unpickled, and
counted in a rate-limited log line, and only ``create``, ``accept_connection`` and the
three calls a stock ``BaseManager`` client makes around them (``dummy`` on ``connect()``,
``incref``/``decref`` for its proxies) are reachable: no remote ``shutdown``, no
``debug_info``, nothing but the registry's objects.

A method served over a connection can ask whether its peer is still there while it waits
(``peer_alive``), and can ask to hear of it when its reply could not be sent
(``on_reply_lost``): the result queue puts back what a vanished client never received.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge
from multiprocessing.managers import Server
from typing import Any, Literal, cast

logger = logging.getLogger(__name__)

__all__ = [
    "DROP_REPORT_EVERY_S",
    "HANDSHAKE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_HANDSHAKES",
    "ManagerServer",
    "on_reply_lost",
    "peer_alive",
]

#: One deadline for the whole handshake (challenge, answer, welcome), counted from accept.
HANDSHAKE_TIMEOUT_S = 5.0
#: Handshakes in progress at once; a connection past this is closed unanswered.
MAX_HANDSHAKES = 256
#: Connections open at once, authenticated or not; a connection past this is closed.
MAX_CONNECTIONS = 1024
#: Dropped connections are logged in one line, with counts by reason, at most this often.
DROP_REPORT_EVERY_S = 5.0

DropReason = Literal[
    "handshake_timeout", "bad_authkey", "hung_up", "handshake_cap", "connection_cap"
]


class _HandshakeChannel:
    """The two calls ``deliver_challenge`` and ``answer_challenge`` make on a Connection
    (``send_bytes``, ``recv_bytes``), on the same socket, against one deadline.

    A kernel timeout per read (SO_RCVTIMEO) bounds each read, not the handshake: a peer
    dribbling one byte every few seconds would hold its handshake slot for minutes.
    The framing is multiprocessing.connection's: a 4-byte signed big-endian length.
    """

    __slots__ = ("_deadline", "_sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _time_left(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the handshake passed its deadline")
        self._sock.settimeout(left)

    def send_bytes(self, data: bytes) -> None:
        self._time_left()
        self._sock.sendall(struct.pack("!i", len(data)) + data)

    def recv_bytes(self, maxlength: int) -> bytes:
        (size,) = struct.unpack("!i", self._recv_exactly(4))
        if not 0 <= size <= maxlength:  # -1 (a 64-bit length follows) never fits either
            raise AuthenticationError(f"handshake message of {size} bytes, over {maxlength}")
        return self._recv_exactly(size)

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            self._time_left()
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the peer closed the connection during the handshake")
            data += chunk
        return data


class _Serving(threading.local):
    """The connection this thread serves, and what to do if its next reply is lost."""

    conn: Connection | None = None
    on_lost: Callable[[], None] | None = None


_SERVING = _Serving()


def peer_alive() -> bool:
    """In a served method: False once the peer of this thread's connection has gone (it
    closed its end: a client waiting for a reply sends nothing, so a readable socket
    means end of file). True outside a served connection."""
    conn = _SERVING.conn
    if conn is None:
        return True
    try:
        return not conn.poll(0)
    except (OSError, EOFError):
        return False


def on_reply_lost(callback: Callable[[], None]) -> None:
    """In a served method: run ``callback`` if the reply it is about to return cannot be
    sent (the peer has gone); forgotten once the reply is sent."""
    _SERVING.on_lost = callback


class _GuardedConnection:
    """The connection ``Server.serve_client`` reads from and replies on, telling a reply
    that could not be sent to whoever asked (``on_reply_lost``)."""

    __slots__ = ("_conn", "recv")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.recv = conn.recv

    def send(self, obj: Any) -> None:
        try:
            self._conn.send(obj)
        except BaseException:
            lost, _SERVING.on_lost = _SERVING.on_lost, None
            if lost is not None:
                lost()
            raise
        _SERVING.on_lost = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _DropReport:
    """Counts connections dropped before they authenticated, by reason, and logs them in
    one line at most every ``every_s``: the first at once, later ones pooled."""

    def __init__(self, every_s: float, labels: dict[DropReason, str]) -> None:
        self.every_s = every_s
        self.total = 0
        self._labels = labels
        self._counts: Counter[DropReason] = Counter()
        self._last_peer = ""
        self._last_report = -float("inf")
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def note(self, reason: DropReason, peer: str) -> None:
        with self._lock:
            self._counts[reason] += 1
            self.total += 1
            self._last_peer = peer
            if self._timer is not None:  # a report is due already: it takes this one too
                return
            wait_s = self._last_report + self.every_s - time.monotonic()
            if wait_s > 0:  # too soon after the last report: pool it for the next
                self._timer = threading.Timer(wait_s, self._report)
                self._timer.daemon = True
                self._timer.start()
                return
        self._report()

    def _report(self) -> None:
        """Log the counts not logged yet, if any."""
        with self._lock:
            self._timer = None
            if not self._counts:
                return
            counts, self._counts = self._counts, Counter()
            self._last_report = time.monotonic()
            total, peer = self.total, self._last_peer
        dropped = sum(counts.values())
        logger.warning(
            "dropped %d connection%s before authentication: %s; %d in all, the last from %s",
            dropped, "" if dropped == 1 else "s",
            ", ".join(f"{n} {self._labels[reason]}" for reason, n in counts.most_common()),
            total, peer,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the pending report, if any, and log what it would have."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
        self._report()


def _peer_name(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address) or "?"


class ManagerServer(Server):
    """Serves one registry of shared objects to authenticated workers."""

    # Server.public, narrowed: see the module docstring.
    public = ["create", "accept_connection", "dummy", "incref", "decref"]  # noqa: RUF012
    listener: Listener
    authkey: bytes

    def __init__(
        self,
        registry: dict[str, Any],
        address: tuple[str, int],
        authkey: bytes,
        *,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        max_pending: int = MAX_HANDSHAKES,
        max_connections: int = MAX_CONNECTIONS,
        report_every_s: float = DROP_REPORT_EVERY_S,
        unknown_hint: str = "",
    ) -> None:
        super().__init__(registry, address, authkey, "pickle")
        self.unknown_hint = unknown_hint  # after "'NAME' is not served here"
        self._served = frozenset(registry)
        # Server listens with a backlog of 16: a farm's workers (re)connecting at once
        # would see SYNs dropped and wait a second per retry. Listening again raises it.
        self.listener._listener._socket.listen(socket.SOMAXCONN)  # type: ignore[attr-defined]
        self.stop_event = threading.Event()  # serve_client() polls it
        self.handshake_timeout_s = handshake_timeout_s
        self._pending = threading.BoundedSemaphore(max_pending)
        self._open = threading.BoundedSemaphore(max_connections)
        self._opened = self._closed = 0  # accepted under the cap, and closed since
        self._slot_lock = threading.Lock()  # connections close on threads of their own
        self.drops = _DropReport(
            report_every_s,
            {
                "handshake_timeout": f"handshake timeout (not done in {handshake_timeout_s:g} s)",
                "bad_authkey": "bad authkey (a worker with another key, or not a worker)",
                "hung_up": "hung up (closed during the handshake)",
                "handshake_cap": f"over the handshake cap ({max_pending} at once)",
                "connection_cap": f"over the connection cap ({max_connections} open)",
            },
        )

    @property
    def open_connections(self) -> int:
        """Connections accepted under the cap and not yet closed (handshaking or served)."""
        return self._opened - self._closed

    def start(self) -> None:
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()

    def create(self, c: Any, typeid: str, /, *args: Any, **kwds: Any) -> Any:
        """``Server.create``, for the registry's names only; another gets a clear error."""
        if typeid not in self._served:
            raise ValueError(f"{typeid!r} is not served here{self.unknown_hint}")
        return super().create(c, typeid, *args, **kwds)

    def serve_client(self, conn: Connection) -> None:
        """Serve calls on ``conn`` (after ``accept_connection``), as the stock server does,
        with ``peer_alive`` and ``on_reply_lost`` available to the methods it runs."""
        _SERVING.conn, _SERVING.on_lost = conn, None
        try:
            super().serve_client(cast(Connection, _GuardedConnection(conn)))
        finally:
            _SERVING.conn = _SERVING.on_lost = None

    def stop(self) -> None:
        self.stop_event.set()
        self.listener.close()
        self.drops.close()

    def _close_slot(self) -> None:
        with self._slot_lock:
            self._closed += 1
        self._open.release()

    def _accept_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn = self.listener.accept()
            except OSError:
                if self.stop_event.is_set():
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: do not spin
                continue
            deadline = time.monotonic() + self.handshake_timeout_s
            peer = _peer_name(self.listener.last_accepted)
            if not self._open.acquire(blocking=False):
                conn.close()  # over the connection cap: the peer retries later
                self.drops.note("connection_cap", peer)
                continue
            self._opened += 1  # this thread only
            if not self._pending.acquire(blocking=False):
                self._close_slot()
                conn.close()  # too many handshakes at once: likely a flood
                self.drops.note("handshake_cap", peer)
                continue
            threading.Thread(
                target=self.handle_request, args=(conn, peer, deadline), daemon=True
            ).start()

    def _authenticate(self, conn: Connection, peer: str, deadline: float) -> bool:
        try:
            reason = self._handshake(conn, deadline)
        finally:
            self._pending.release()
        if reason is None:
            return True
        self.drops.note(reason, peer)
        return False

    def _handshake(self, conn: Connection, deadline: float) -> DropReason | None:
        """The HMAC handshake both ways, all of it before ``deadline``; None if it passed,
        else why the peer is dropped."""
        # A second socket object on the connection's file: Python's socket timeouts work
        # on it, and once it is made blocking again the Connection carries on as before.
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            # Replies are written as header + payload: see FrontierClient._open on NODELAY.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = cast(Connection, _HandshakeChannel(sock, deadline))
            deliver_challenge(channel, self.authkey)
            answer_challenge(channel, self.authkey)
            return None
        except TimeoutError:
            return "handshake_timeout"
        except (AuthenticationError, AssertionError):  # answer_challenge asserts its input
            return "bad_authkey"
        except (OSError, EOFError):
            return "hung_up"
        finally:
            sock.setblocking(True)  # the file's flags are shared with the Connection's
            sock.close()

    def handle_request(
        self, conn: Connection, peer: str = "?", deadline: float | None = None
    ) -> None:
        """Authenticate, then serve the one manager call a connection opens with."""
        if deadline is None:
            deadline = time.monotonic() + self.handshake_timeout_s
        try:
            if not self._authenticate(conn, peer, deadline):
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
            self._close_slot()
