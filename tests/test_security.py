"""The coordination channel: loopback by default, strong keys, private key files, no
unauthenticated pickle, capped handshakes, validated calls. Real server processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from spiderfarm.client import FrontierClient
from spiderfarm.errors import SettingsError
from spiderfarm.http import Request
from spiderfarm.security import decode_key, require_strong_key
from tests.farm import KEY_HEX, ServerProcess, start_worker, wait_all, write_key
from tests.sites import subprocess_environ

pytestmark = pytest.mark.timeout(120)


def run_server(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spiderfarm.server", *args],
        env=env or subprocess_environ(), capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip


def test_default_bind_is_loopback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spiderfarm.server", "--help"],
        env=subprocess_environ(), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "default 127.0.0.1:5000" in result.stdout


def test_server_without_bind_host_listens_on_loopback(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path, bind=":0")
    try:
        assert server.address.startswith("127.0.0.1:")
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("key_text", "problem"),
    [
        ("password", "a well-known key"),
        ("abracadabra", "a well-known key"),
        ("0123456789abcdef", "only 16 bytes"),
        ("ab" * 32, "not random (too few distinct bytes)"),
    ],
)
def test_weak_keys_are_refused_before_listening(
    tmp_path: Path, site: str, key_text: str, problem: str
) -> None:
    key = write_key(tmp_path, key_text)
    result = run_server(
        ["links", "-a", f"start_url={site}", "--bind", "0.0.0.0:0", "--authkey-file", str(key)]
    )
    assert result.returncode == 2
    assert f"refusing to listen on 0.0.0.0: the authkey is {problem}" in result.stderr
    assert "secrets.token_hex(32)" in result.stderr  # says how to make a good one
    assert "listening on" not in result.stdout


def test_empty_key_is_refused(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path, "")
    result = run_server(["links", "-a", f"start_url={site}", "--authkey-file", str(key)])
    assert result.returncode == 2
    assert "is empty" in result.stderr


def test_world_readable_key_file_is_refused(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    key.chmod(0o644)
    result = run_server(["links", "-a", f"start_url={site}", "--authkey-file", str(key)])
    assert result.returncode == 2
    assert "is readable by other users (mode 644); run: chmod 600" in result.stderr


def test_generated_key_file_is_private(tmp_path: Path, site: str) -> None:
    env = subprocess_environ()
    env.pop("SPIDERFARM_AUTHKEY", None)
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spiderfarm.server", "links", "-a", f"start_url={site}",
         "--bind", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("authkey written to ")
        path = Path(line.split()[3])
        assert path.parent == tmp_path
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(decode_key(path.read_text())) == 32
    finally:
        proc.kill()
        proc.communicate()


def test_strong_key_rules() -> None:
    require_strong_key(b"x", "127.0.0.1")  # loopback: any non-empty key
    require_strong_key(bytes(range(32)), "10.1.2.3")
    with pytest.raises(SettingsError, match="only 31 bytes"):
        require_strong_key(bytes(range(31)), "10.1.2.3")
    assert decode_key("00" * 32) == bytes(32)
    assert (
        decode_key("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=")
        == b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
    )


def _frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


class _Touch:
    """Unpickling this creates a file: proof of code execution if it ever happens."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def test_unauthenticated_pickle_is_never_loaded(tmp_path: Path, site: str) -> None:
    marker = tmp_path / "pwned"
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    try:
        host, port = server.address.split(":")
        payload = pickle.dumps((None, "create", (_Touch(marker),), {}))
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.recv(4096)  # the server's challenge
            sock.sendall(_frame(payload) * 3)
            sock.settimeout(10)
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except ConnectionResetError:
                pass
        assert b"#WELCOME#" not in data
        assert not marker.exists()
        assert server.proc.poll() is None  # still serving
    finally:
        server.stop()


def test_silent_peer_is_dropped_at_the_handshake_timeout(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    try:
        host, port = server.address.split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            started = time.monotonic()
            sock.recv(4096)  # the challenge; we never answer
            closed = sock.recv(4096) == b""
            waited = time.monotonic() - started
        assert closed
        assert 4.0 <= waited < 15.0  # the 5 s handshake timeout, not forever
    finally:
        server.stop()


def test_idle_sockets_do_not_stop_a_real_worker(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    out = tmp_path / "out.jsonl"
    server = ServerProcess(
        ["links", "-a", f"start_url={site}links/0?max=30", "-o", str(out)], key, tmp_path
    )
    host, port = server.address.split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(500)]
    try:
        worker = start_worker(server.address, key)
        assert wait_all([worker], 90) == [0]
        assert server.wait(30) == 0
        assert len(out.read_text().splitlines()) == 31
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_a_burst_of_connections_waits_in_the_backlog_not_dropped(tmp_path: Path, site: str) -> None:
    # With the server not accepting at all (stopped), the kernel still completes as many
    # handshakes as the listen backlog holds; multiprocessing's default of 16 would drop
    # the rest (each peer then waits a second per SYN retry).
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    host, port = server.address.split(":")
    os.kill(server.proc.pid, signal.SIGSTOP)
    socks: list[socket.socket] = []
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                socks.append(socket.create_connection((host, int(port)), timeout=0.5))
        assert len(socks) == 100
    finally:
        for sock in socks:
            sock.close()
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_manager_internals_are_closed_to_workers(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    try:
        host, port = server.address.split(":")
        for method in ("shutdown", "debug_info", "number_of_objects"):
            conn = Client((host, int(port)), authkey=bytes.fromhex(KEY_HEX))
            conn.send((None, method, (), {}))
            kind, result = conn.recv()
            conn.close()
            assert kind == "#TRACEBACK"
            assert f"'{method}' is not available to workers" in result
        with pytest.raises(AuthenticationError):
            Client((host, int(port)), authkey=b"not the key")
        assert server.proc.poll() is None
        deadline = time.monotonic() + 10
        logged = "before authentication: 1 bad authkey (a worker with another key, or not a worker)"
        while logged not in server.err_path.read_text():
            assert time.monotonic() < deadline, "the failed peer was not logged"
            time.sleep(0.05)
    finally:
        server.stop()


async def test_oversized_and_malformed_acks_are_refused_and_the_server_serves_on(
    tmp_path: Path, site: str
) -> None:
    key = write_key(tmp_path)
    out = tmp_path / "out.jsonl"
    server = ServerProcess(
        ["links", "-a", f"start_url={site}links/0?max=5", "-o", str(out)], key, tmp_path
    )
    try:
        host, port = server.address.split(":")
        client = FrontierClient((host, int(port)), bytes.fromhex(KEY_HEX), give_up_s=5)
        try:
            welcome = await client.hello({"host": "test", "pid": 1})
            me = welcome["worker_id"]
            leases, _, _ = await client.exchange(me, [], 1)
            lease_id = leases[0][0]
            huge = "x" * (5 * 2**20)
            with pytest.raises(ValueError, match="at most 4194304 bytes"):
                await client.exchange(me, [(lease_id, "ok", "", [], [huge], (200, 0.1, 0.0))], 0)
            with pytest.raises(ValueError, match="an outcome must be a 6-tuple"):
                await client.exchange(me, [("junk",)], 0)  # type: ignore[list-item]
            for info in [(200, "0.2", 0.0), ("200", 0.1, 0.0), (200, 0.1, float("nan"))]:
                with pytest.raises(ValueError, match="info must be"):
                    await client.exchange(me, [(lease_id, "ok", "", [], [], info)], 0)
            with pytest.raises(ValueError, match="want must be an int"):
                await client.exchange(me, [], 10**9)
            bad_url = Request("http://127.0.0.1/").to_wire()
            bad_url = ("http://x/" + "a" * 3000, *bad_url[1:])  # type: ignore[assignment]
            with pytest.raises(ValueError, match="at most 2083 characters"):
                await client.exchange(
                    me, [(lease_id, "ok", "", [(1, "x", bad_url)], [], (0, 0.0, 0.0))], 0
                )
            # The lease is untouched by the refused calls: hand it back, then crawl for real.
            await client.exchange(me, [(lease_id, "release", "", [], [], (0, 0.0, 0.0))], 0)
            await client.bye(me)
        finally:
            await client.close()
        worker = start_worker(server.address, key)
        await asyncio.to_thread(wait_all, [worker], 60)
        assert await asyncio.to_thread(server.wait, 30) == 0
        assert len(out.read_text().splitlines()) == 6
        assert "refused malformed exchange" in server.err_path.read_text()
    finally:
        server.stop()
