"""The manager's handshake: one deadline for all of it, capped slots, and dropped peers
counted in rate-limited log lines. Peers are raw sockets; servers are real processes, or
an in-process ManagerServer on 127.0.0.1:0 where caps and intervals are made small."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import selectors
import socket
import struct
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from types import TracebackType

import pytest

from spiderfarm.client import FrontierClient
from spiderfarm.manager import HANDSHAKE_TIMEOUT_S, MAX_HANDSHAKES, ManagerServer
from tests.farm import KEY_HEX, ServerProcess, start_worker, wait_all, write_key

pytestmark = pytest.mark.timeout(120)


class Dribblers:
    """``n`` peers that each send one byte of a would-be answer to the challenge every
    ``every_s`` and never finish it; ``held`` says how long the server kept each one."""

    def __init__(self, address: tuple[str, int], n: int, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.socks: list[socket.socket] = []
        self.opened: list[float] = []
        for _ in range(n):
            self.socks.append(socket.create_connection(address, timeout=10))
            self.opened.append(time.monotonic())
        self.challenged: set[int] = set()
        self.held: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        answer = struct.pack("!i", 256) + b"x" * 256  # a length, then a byte at a time
        sent, next_at = 0, time.monotonic()
        while len(self.held) < len(self.socks) and not self._stop.is_set():
            if time.monotonic() >= next_at and sent < len(answer):
                for i, sock in enumerate(self.socks):
                    if i not in self.held:
                        with contextlib.suppress(OSError):  # reset: its read says so
                            sock.send(answer[sent : sent + 1])
                sent, next_at = sent + 1, next_at + self.every_s
            wait_s = min(max(0.0, next_at - time.monotonic()), 0.05)
            for key, _ in selector.select(wait_s):
                i = key.data
                try:
                    data = self.socks[i].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.challenged.add(i)
                else:
                    self.held[i] = time.monotonic() - self.opened[i]
                    selector.unregister(self.socks[i])
        selector.close()

    def wait(self, timeout_s: float, challenged: bool = False) -> bool:
        """Until every peer is dropped (or, with ``challenged``, has its challenge)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.challenged | set(self.held) if challenged else set(self.held)
            if len(done) == len(self.socks):
                return True
            time.sleep(0.02)
        return False

    def __enter__(self) -> Dribblers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def drop_counts(text: str) -> dict[str, int]:
    """Dropped connections by reason, summed over the report lines in ``text``."""
    counts: dict[str, int] = {}
    for line in re.findall(r"dropped \d+ connections? before authentication: ([^;]*);", text):
        for number, reason in re.findall(r"(\d+) ([a-z ]+?) \(", line):
            counts[reason] = counts.get(reason, 0) + int(number)
    return counts


def test_a_peer_dribbling_a_byte_a_second_is_dropped_at_the_handshake_deadline(
    tmp_path: Path, site: str
) -> None:
    # A timeout per read never fires for a peer that sends a byte a second: it held its
    # handshake slot for as long as it had bytes to send (260 s here, 17 min at 4 s a byte).
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    try:
        host, port = server.address.split(":")
        with Dribblers((host, int(port)), 1) as peer:
            assert peer.wait(HANDSHAKE_TIMEOUT_S + 10), "the dribbling peer was never dropped"
        (held,) = peer.held.values()
        assert HANDSHAKE_TIMEOUT_S - 0.2 <= held <= HANDSHAKE_TIMEOUT_S + 1.5
        assert peer.challenged == {0}  # the server spoke first, then waited for the answer
    finally:
        server.stop()


def test_dribblers_in_every_handshake_slot_keep_a_worker_out_only_until_the_deadline(
    tmp_path: Path, site: str
) -> None:
    key = write_key(tmp_path)
    out = tmp_path / "out.jsonl"
    server = ServerProcess(
        ["links", "-a", f"start_url={site}links/0?max=5", "-o", str(out)], key, tmp_path
    )
    try:
        host, port = server.address.split(":")
        with Dribblers((host, int(port)), MAX_HANDSHAKES) as peers:
            assert peers.wait(10, challenged=True)  # every slot is taken now
            client = FrontierClient(
                (host, int(port)), bytes.fromhex(KEY_HEX), give_up_s=HANDSHAKE_TIMEOUT_S + 10
            )

            async def join() -> float:
                try:
                    welcome = await client.hello({"host": "test", "pid": 1})
                    joined = time.monotonic()
                    await client.bye(welcome["worker_id"])
                    return joined
                finally:
                    await client.close()

            joined = asyncio.run(join())
            # Refused while the slots are full, it retries (backoff at most 2 s) and gets in
            # once the deadline has freed them.
            assert joined - peers.opened[0] <= HANDSHAKE_TIMEOUT_S + 3.0
            assert peers.wait(5)
            held = sorted(peers.held.values())
            assert HANDSHAKE_TIMEOUT_S - 0.2 <= held[0] <= held[-1] <= HANDSHAKE_TIMEOUT_S + 2.0
        worker = start_worker(server.address, key)
        assert wait_all([worker], 60) == [0]
        assert server.wait(30) == 0
        assert len(out.read_text().splitlines()) == 6
        counts = drop_counts(server.err_path.read_text())
        assert counts["handshake timeout"] == MAX_HANDSHAKES
        assert counts["over the handshake cap"] >= 1  # the client, while the slots were full
        assert set(counts) == {"handshake timeout", "over the handshake cap"}
    finally:
        server.stop()


def test_dropped_peers_are_logged_with_counts_by_reason_at_most_once_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="spiderfarm.manager")
    key = secrets.token_bytes(32)
    every_s = 1.0
    server = ManagerServer(
        {}, ("127.0.0.1", 0), key, handshake_timeout_s=1.0, max_connections=3,
        report_every_s=every_s,
    )  # fmt: skip
    server.start()
    address = server.address
    try:
        # Three silent peers fill the connection cap; the next two are closed at once.
        with Dribblers(address, 3, every_s=60) as silent:
            refused = [socket.create_connection(address, timeout=5) for _ in range(2)]
            for sock in refused:
                started = time.monotonic()
                assert sock.recv(4096) == b""  # no challenge: closed unanswered
                assert time.monotonic() - started < 2.0  # at once (slack for a loaded CI)
                sock.close()
            assert silent.wait(5)
            assert all(0.8 <= held <= 3.5 for held in silent.held.values())
        deadline = time.monotonic() + 10  # the server frees a slot just after it closes it
        while server.open_connections:
            assert time.monotonic() < deadline, server.open_connections
            time.sleep(0.01)
        for _ in range(4):
            with pytest.raises(AuthenticationError):
                Client(address, authkey=b"not the key")
        for _ in range(2):
            socket.create_connection(address, timeout=5).close()  # hangs up at once
        expected = {
            "over the connection cap": 2,
            "handshake timeout": 3,
            "bad authkey": 4,
            "hung up": 2,
        }
        deadline = time.monotonic() + 3 * every_s + 5
        while drop_counts(caplog.text) != expected:
            assert time.monotonic() < deadline, drop_counts(caplog.text)
            time.sleep(0.05)
        reports = [r for r in caplog.records if r.name == "spiderfarm.manager"]
        assert (
            reports[0]
            .getMessage()
            .startswith(
                "dropped 1 connection before authentication: 1 over the connection cap "
                "(3 open); 1 in all, the last from 127.0.0.1:"
            )
        )
        gaps = [b.created - a.created for a, b in itertools.pairwise(reports)]
        assert gaps and min(gaps) >= every_s - 0.05
        assert reports[-1].getMessage().split("; ")[-1].startswith("11 in all, the last from")
    finally:
        server.stop()
