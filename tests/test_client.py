"""The worker's client against a real server process: timeouts, cancellation, reconnects."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.managers import BaseManager
from pathlib import Path

import pytest

from spiderfarm.client import FrontierClient
from spiderfarm.errors import ConnectError
from tests.farm import KEY_HEX, ServerProcess, write_key


@pytest.fixture
def server(tmp_path: Path, site: str) -> Iterator[ServerProcess]:
    key = write_key(tmp_path)
    out = tmp_path / "out.jsonl"
    proc = ServerProcess(
        ["links", "-a", f"start_url={site}links/0?max=5", "-s", "obey_robots=false",
         "-o", str(out)], key, tmp_path,
    )  # fmt: skip
    try:
        yield proc
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)  # never leave a stopped process behind
        proc.stop()


def freeze(server: ServerProcess) -> None:
    """SIGSTOP the server and wait until the kernel has really stopped it."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    stat = Path(f"/proc/{server.proc.pid}/stat")
    deadline = time.monotonic() + 5
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.005)


def client_for(server: ServerProcess, **kw: float) -> FrontierClient:
    host, port = server.address.split(":")
    return FrontierClient((host, int(port)), bytes.fromhex(KEY_HEX), **kw)


async def test_a_stalled_server_times_out_and_the_next_call_reconnects(
    server: ServerProcess,
) -> None:
    client = client_for(server, call_timeout_s=0.5, give_up_s=1.0)
    try:
        welcome = await client.hello({"host": "test", "pid": 1})
        assert welcome["worker_id"].startswith("w1-test-1")
        freeze(server)
        started = time.monotonic()
        with pytest.raises(ConnectError, match="no answer in time"):
            await client.status()
        assert 1.0 <= time.monotonic() - started < 5.0  # gave up after give_up_s, not hung
        os.kill(server.proc.pid, signal.SIGCONT)
        status = await client.status()
        assert status["state"] == "running"
        assert status["queued"] == 1  # the start URL, untouched
    finally:
        await client.close()


async def test_a_cancelled_call_never_hands_its_late_reply_to_the_next_call(
    server: ServerProcess,
) -> None:
    # The stream of a call cut off mid-way still holds that call's reply; reusing it would
    # give the next call the wrong answer. The client must drop it and reconnect.
    client = client_for(server, call_timeout_s=10.0, give_up_s=10.0)
    try:
        await client.hello({"host": "test", "pid": 1})
        freeze(server)
        pending = asyncio.ensure_future(client.status(detail=True))
        await asyncio.sleep(0.3)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        os.kill(server.proc.pid, signal.SIGCONT)
        welcome = await client.hello({"host": "again", "pid": 2})
        assert welcome["worker_id"].startswith("w2-again-2")
        leases, refused, state = await client.exchange(welcome["worker_id"], [], 5)
        assert [lease[2][0] for lease in leases] == [f"{server_site(server)}links/0?max=5"]
        assert (refused, state) == ([], "running")
    finally:
        await client.close()


def server_site(server: ServerProcess) -> str:
    start = next(a for a in server.argv if a.startswith("start_url="))
    return start.removeprefix("start_url=").split("links/")[0]


async def test_a_manager_that_is_not_a_spiderfarm_server_is_a_connect_error() -> None:
    # Right key, wrong server: a plain BaseManager without the frontier service. That is
    # a connection problem (retried, then a clear ConnectError), never a refused batch.
    key = bytes.fromhex(KEY_HEX)
    manager = BaseManager(address=("127.0.0.1", 0), authkey=key, ctx=mp.get_context("spawn"))
    manager.start()
    host, port = manager.address
    client = FrontierClient((host, port), key, call_timeout_s=2.0, give_up_s=0.5)
    try:
        with pytest.raises(ConnectError, match="server refused create"):
            await client.hello({"host": "test", "pid": 1})
    finally:
        await client.close()
        manager.shutdown()
