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
from typing import Any, cast

import pytest

from spiderfarm.client import FrontierClient
from spiderfarm.errors import SettingsError
from spiderfarm.http import Request
from spiderfarm.protocol import (
    INT64_MAX,
    INT64_MIN,
    MAX_BATCH,
    MAX_ITEM_BYTES,
    MAX_LINKS_PER_PAGE,
    MAX_NESTING,
    MAX_REQUEST_VALUES,
    check_exchange,
)
from spiderfarm.security import decode_key, require_strong_key
from spiderfarm.urls import Fingerprinter, host_of
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


# -- what an authenticated worker may send -------------------------------------------------
def _exchange(requests: list[Any], reason: str = "") -> tuple[Any, ...]:
    return ("w1-test-1", [(7, "ok", reason, requests, [], (200, 0.1, 0.0))], 0)


def _check(*args: Any) -> None:
    check_exchange(
        *args, max_batch=MAX_BATCH, max_item_bytes=MAX_ITEM_BYTES, max_links=MAX_LINKS_PER_PAGE
    )


def _entry(fp: int = 1, **fields: Any) -> tuple[int, str, Any]:
    wire = list(Request("http://a.test/", meta={"page": 1}).to_wire())
    for name, value in fields.items():
        wire[_WIRE_FIELDS.index(name)] = value
    return (fp, "a.test", tuple(wire))


_WIRE_FIELDS = (
    "url", "callback", "method", "headers", "body", "meta", "priority", "dont_filter",
    "cb_kwargs", "depth", "errback",
)  # fmt: skip


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_fingerprints_priorities_and_depths_are_checked_against_sqlites_integer() -> None:
    fpr = Fingerprinter()
    made = [fpr.fingerprint(f"http://a.test/{n}") for n in range(2000)]
    assert min(made) < 0 < max(made)  # signed: the range the journal stores as it is
    for fp in (INT64_MIN, INT64_MAX, 0, *made):
        _check(*_exchange([_entry(fp)]))
    for fp in (INT64_MIN - 1, INT64_MAX + 1, 2**64):
        with pytest.raises(ValueError, match=f"its fingerprint {fp} is not a signed 64-bit int"):
            _check(*_exchange([_entry(fp)]))
    _check(*_exchange([_entry(priority=INT64_MIN), _entry(priority=INT64_MAX)]))
    with pytest.raises(ValueError, match=r"http://a\.test/: its priority 9223372036854775808 is"):
        _check(*_exchange([_entry(priority=INT64_MAX + 1)]))
    _check(*_exchange([_entry(depth=0), _entry(depth=INT64_MAX)]))
    for depth in (-1, INT64_MAX + 1, 1.0, True):
        with pytest.raises(ValueError, match=r"its depth .* is not an int in 0\.\.2\*\*63-1"):
            _check(*_exchange([_entry(depth=depth)]))
    with pytest.raises(ValueError, match="bad lease id"):
        _check("w1", [(2**64, "ok", "", [], [], (200, 0.1, 0.0))], 0)


def test_headers_meta_and_cb_kwargs_are_capped_in_depth_values_and_size() -> None:
    everything = Request(
        "http://a.test/", method="POST", body=b"q=1", headers={"Referer": "http://a.test/"},
        meta={"item": {"tags": ["a", ("b", 2.5)], "seen": {1, 2}}, "page": None},
        cb_kwargs={"n": 1}, callback="parse", errback="failed",
    )  # fmt: skip
    _check(*_exchange([(1, "a.test", everything.to_wire())]))
    _check(*_exchange([_entry(meta=_nested(MAX_NESTING))]))
    deep = "nest over 100 deep"
    for fields in (
        {"meta": _nested(MAX_NESTING + 1)},
        {"meta": _nested(100_000)},
        {"cb_kwargs": {"x": [[[_nested(MAX_NESTING)]]]}},
        {"headers": {"X": _nested(MAX_NESTING)}},
        {"meta": {_tuple_nested(MAX_NESTING + 1): 1}},  # nesting in a key
    ):
        with pytest.raises(ValueError, match=deep):
            _check(*_exchange([_entry(**fields)]))
    _check(*_exchange([_entry(meta={"a": list(range(MAX_REQUEST_VALUES - 3))})]))
    with pytest.raises(ValueError, match="over 10000 values in headers, meta, cb_kwargs"):
        _check(*_exchange([_entry(meta={"a": list(range(MAX_REQUEST_VALUES - 2))})]))
    with pytest.raises(ValueError, match="over 4194304 bytes in body, headers, meta"):
        _check(*_exchange([_entry(meta={"a": "x" * 3 * 2**20}, body=b"x" * 2**20 + b"x")]))
    for fields, message in [
        ({"meta": ["not", "a", "dict"]}, "headers, meta and cb_kwargs must be dicts or None"),
        ({"body": "text"}, "the body must be bytes"),
        ({"callback": 3}, "method, callback and errback must be strings"),
        ({"url": "http://a.test/\udc80"}, "a request URL must be an ASCII string"),
    ]:
        with pytest.raises(ValueError, match=message):
            _check(*_exchange([_entry(**fields)]))
    with pytest.raises(ValueError, match="reason must be a short string"):
        _check(*_exchange([], reason="bad \udc80"))
    _check(*_exchange([], reason="CloseSpider: fertig ✓"))  # not ASCII, but UTF-8: fine


def _tuple_nested(levels: int) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for _ in range(levels - 1):
        value = (value,)
    return value


def _deep_meta_call(ident: str, me: str, lease_id: int, url: str, levels: int) -> bytes:
    """A pickled ``exchange`` call whose new request's meta is ``levels`` dicts deep, built
    opcode by opcode: pickle.dumps itself gives up after about 1,000 levels (unpickling
    does not: it is iterative)."""
    placeholder = "META-PLACEHOLDER"
    wire = (*Request(url).to_wire()[:5], placeholder, *Request(url).to_wire()[6:])
    outcome = (lease_id, "ok", "", [(12345, host_of(url), wire)], [], (200, 0.01, 0.0))
    data = pickle.dumps((ident, "exchange", (me, [outcome], 0), {}), protocol=2)
    text = b"X" + struct.pack("<I", len(placeholder)) + placeholder.encode()  # BINUNICODE
    # EMPTY_DICT, then key 'a', for every level; then one SETITEM per level, inside out.
    deep = (b"}" + b"X" + struct.pack("<I", 1) + b"a") * (levels - 1) + b"}" + b"s" * (levels - 1)
    assert data.count(text) == 1
    return data.replace(text, deep)


def test_a_poisoned_ack_is_refused_and_the_journaled_crawl_finishes(
    tmp_path: Path, site: str
) -> None:
    # Both once went through: a fingerprint of 2**64 then failed every journal commit (the
    # server exited 1 with no summary), and a meta 100,000 deep failed every commit and
    # every lease of it with a RecursionError (the crawl never finished).
    key = write_key(tmp_path)
    out = tmp_path / "out.jsonl"
    args = [
        "links", "-a", f"start_url={site}links/0?max=5", "-s", "obey_robots=false",
        "-o", str(out), "--job-dir", str(tmp_path / "job"),
    ]  # fmt: skip
    server = ServerProcess(args, key, tmp_path)
    try:
        host, port = server.address.split(":")
        address, authkey = (host, int(port)), bytes.fromhex(KEY_HEX)
        with Client(address, authkey=authkey) as conn:
            conn.send((None, "create", ("frontier",), {}))
            kind, (ident, _) = conn.recv()
        with Client(address, authkey=authkey) as conn:
            conn.send((None, "accept_connection", ("worker",), {}))
            assert conn.recv() == ("#RETURN", None)

            def call(method: str, *args: Any) -> tuple[str, Any]:
                conn.send((ident, method, args, {}))
                return cast(tuple[str, Any], conn.recv())

            _, welcome = call("hello", {"host": "raw", "pid": 1})
            me = welcome["worker_id"]
            _, ([(lease_id, _, _)], _, _) = call("exchange", me, [], 1)
            link = Request(f"{site}links/99?max=5").to_wire()
            bad_fp = (lease_id, "ok", "", [(2**64, host_of(link[0]), link)], [], (200, 0.1, 0.0))
            kind, error = call("exchange", me, [bad_fp], 0)
            assert (kind, type(error)) == ("#ERROR", ValueError)
            assert str(error) == (
                f"refused malformed exchange from worker: request {link[0]}: its fingerprint "
                "18446744073709551616 is not a signed 64-bit int"
            )
            conn.send_bytes(_deep_meta_call(ident, me, lease_id, link[0], 100_000))
            kind, error = conn.recv()
            assert (kind, type(error)) == ("#ERROR", ValueError)
            assert str(error).endswith(
                f"request {link[0]}: headers, meta or cb_kwargs nest over 100 deep"
            )
            # The lease is untouched by the refused calls: hand it back, then crawl for real.
            assert (
                call("exchange", me, [(lease_id, "release", "", [], [], (0, 0.0, 0.0))], 0)[0]
                == "#RETURN"
            )
            call("bye", me)
        worker = start_worker(server.address, key)
        assert wait_all([worker], 60) == [0]
        assert server.wait(30) == 0
        output = server.out_path.read_text()
        assert "crawl finished: 6 pages, 6 items, 0 errors" in output
        assert len(out.read_text().splitlines()) == 6
        errors = server.err_path.read_text()
        assert errors.count("refused malformed exchange from worker") == 2
        assert "cannot write the job journal" not in errors
        assert "RecursionError" not in errors and "OverflowError" not in errors
        # The job dir is whole: a rerun finds nothing left to do, and adds nothing.
        rerun = ServerProcess(args, key, tmp_path)
        assert rerun.wait(30) == 0
        assert "resuming from " in rerun.output() and ": 0 requests queued" in rerun.output()
        assert rerun.out_path.read_text().count("crawl finished: 6 pages, 6 items") == 2
        assert len(out.read_text().splitlines()) == 6
    finally:
        server.stop()
