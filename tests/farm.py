"""Helpers for tests that run the real farm: CLI, server and worker processes."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.sites import REPO_ROOT, subprocess_environ

KEY_HEX = secrets.token_hex(32)  # a strong 32-byte key, hex encoded, new each run


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path = REPO_ROOT,
    timeout_s: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m spiderfarm ARGS`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "spiderfarm", *args],
        cwd=cwd,
        env=env or subprocess_environ(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def read_items(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_key(directory: Path, text: str = KEY_HEX) -> Path:
    path = directory / "farm.key"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


class ServerProcess:
    """A real ``python -m spiderfarm.server`` on 127.0.0.1:0, its output in files."""

    def __init__(
        self, args: Sequence[str], key_file: Path, workdir: Path, bind: str = "127.0.0.1:0"
    ) -> None:
        self.out_path, self.err_path = workdir / "server.out", workdir / "server.err"
        self._out = self.out_path.open("a")
        self._err = self.err_path.open("a")
        self._start = self.out_path.stat().st_size
        self.argv = [
            sys.executable, "-m", "spiderfarm.server", *args,
            "--bind", bind, "--authkey-file", str(key_file),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO_ROOT, env=subprocess_environ(), stdout=self._out,
            stderr=self._err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.address = self._wait_for_address(20)

    def _wait_for_address(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.out_path.read_text()[self._start :]
            match = re.search(r"listening on (127\.0\.0\.1:\d+)", text)
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"server did not start: {self.output()}")

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()


def start_worker(
    address: str, key_file: Path, *extra: str, cwd: Path = REPO_ROOT
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "spiderfarm.worker", "--connect", address,
         "--authkey-file", str(key_file), *extra],
        cwd=cwd, env=subprocess_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_all(procs: Sequence[subprocess.Popen[str]], timeout_s: float) -> list[int]:
    """Exit codes of ``procs``; kills any still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(-9)
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    return codes


def environ_with_key() -> dict[str, str]:
    return {**subprocess_environ(), "SPIDERFARM_AUTHKEY": KEY_HEX}


__all__ = [
    "KEY_HEX",
    "ServerProcess",
    "environ_with_key",
    "read_items",
    "run_cli",
    "start_worker",
    "wait_all",
    "write_key",
]
