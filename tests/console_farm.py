"""Helpers for the console tests: a real server with its console, a worker, the demo
catalogue site, and HTTP calls to the console with or without its token."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.farm import ServerProcess, run_cli, start_worker, wait_all
from tests.sites import run_subprocess_site, stop_subprocess

__all__ = [
    "ConsoleFarm",
    "call",
    "console_farm",
    "demo_site",
    "non_loopback_ip",
    "wait_for",
]


def wait_for(check: Callable[[], Any], timeout_s: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def call(
    url: str,
    *,
    token: str | None = None,
    data: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one GET, or a POST of ``data`` as JSON."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = None
    if data is not None:
        body = json.dumps(data).encode()
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def non_loopback_ip() -> str:
    """This machine's address on its default route, else 0.0.0.0 (any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a route
            ip = str(s.getsockname()[0])
        except OSError:
            return "0.0.0.0"
    return "0.0.0.0" if ip.startswith("127.") else ip


@contextmanager
def demo_site(pages: int) -> Iterator[str]:
    proc, base_url = run_subprocess_site(
        [sys.executable, "-m", "spiderfarm.demosite", "--port", "0", "--pages", str(pages)]
    )
    try:
        yield base_url
    finally:
        stop_subprocess(proc)


class ConsoleFarm:
    """A running server (``python -m spiderfarm.server``) with its console, and workers."""

    def __init__(self, server: ServerProcess, key_file: Path) -> None:
        self.server, self.key_file = server, key_file
        printed = re.compile(r"console: (http://\S+?/)[ ;]")
        match = wait_for(lambda: printed.search(server.output()), 20, "the console URL")
        self.url: str = match.group(1)
        self.workers: list[subprocess.Popen[str]] = []

    def start_workers(self, n: int, *extra: str) -> None:
        self.workers += [start_worker(self.server.address, self.key_file, *extra) for _ in range(n)]

    def status(self, detail: bool = False) -> dict[str, Any]:
        """``status --json`` (``--hosts``: every host and worker)."""
        args = ["status", "--connect", self.server.address, "--authkey-file", str(self.key_file)]
        done = run_cli([*args, "--json", *(["--hosts"] if detail else [])], timeout_s=30)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def state(self, token: str | None = None, base: str | None = None) -> dict[str, Any]:
        status, body = call(f"{base or self.url}api/state", token=token)
        assert status == 200, body
        return dict(json.loads(body))

    def paused_and_still(self, token: str | None = None, base: str | None = None) -> dict[str, Any]:
        """Pause leasing, then wait until nothing is in flight and the console's detailed
        snapshot (every 2 s) is newer than that: from then on every number stands still."""
        status, body = call(
            f"{base or self.url}api/pause", token=token, data={},
            headers={"X-Spiderfarm-Token": token or "-"},
        )  # fmt: skip
        assert status == 200, body
        wait_for(lambda: self.status()["in_flight"] == 0, 30, "in-flight requests to end")
        time.sleep(2.6)
        return self.status(detail=True)

    def stop(self, timeout_s: float = 30) -> str:
        self.server.wait(timeout_s)
        wait_all(self.workers, timeout_s)
        return self.server.output()


@contextmanager
def console_farm(
    tmp_path: Path,
    key_file: Path,
    args: list[str],
    *,
    bind: str = "127.0.0.1:0",
) -> Iterator[ConsoleFarm]:
    server = ServerProcess(args, key_file, tmp_path, bind=bind)
    try:
        farm = ConsoleFarm(server, key_file)
        yield farm
    finally:
        server.stop()
        for proc in farm.workers if "farm" in locals() else []:
            if proc.poll() is None:
                proc.kill()
        wait_all(farm.workers if "farm" in locals() else [], 10)
