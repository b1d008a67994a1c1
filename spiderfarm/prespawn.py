"""``crawl``'s workers, started before the command line's own imports.

A worker spends about a third of a second importing aiohttp, parsel and lxml before it
can connect; so does ``crawl`` itself before it listens. Done one after the other, a
short crawl waits for both. ``python -m spiderfarm crawl`` therefore starts its workers
first, from the few options that decide how they run (``--workers``, ``--spiders-dir``,
``--log-level``), and tells each one where the farm listens, and its key, on a pipe to
its standard input once the server is up (``python -m spiderfarm.worker
--connect-stdin``). A worker whose pipe closes unread (the command failed first) exits
quietly. If the full command line turns out to ask for different workers, they are
dismissed that way and started again as usual.

It is imported before the rest of the command line (a module of the package, not of
``cli``, whose imports are the cost saved): the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["Prespawned", "prespawn", "take"]


class Prespawned:
    """Worker processes waiting on their standard input for an address and a key."""

    def __init__(
        self, procs: list[subprocess.Popen[bytes]], spiders_dir: str, log_level: str
    ) -> None:
        self.procs = procs
        self.spiders_dir = spiders_dir
        self.log_level = log_level

    def matches(self, n: int, spiders_dir: str, log_level: str, stdout: int | None) -> bool:
        return (
            len(self.procs) == n
            and self.spiders_dir == spiders_dir
            and self.log_level == log_level
            and stdout is None
        )

    def send(self, address: tuple[str, int], authkey: bytes) -> list[subprocess.Popen[bytes]]:
        """Tell each worker where to connect; returns them."""
        line = f"{address[0]}:{address[1]} {authkey.hex()}\n".encode()
        for proc in self.procs:
            assert proc.stdin is not None
            # A worker that died already (a broken install) is noticed as any dead one.
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.write(line)
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()
        return self.procs

    def dismiss(self) -> None:
        """Close the pipes unwritten: each worker exits without connecting."""
        for proc in self.procs:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


_started: Prespawned | None = None


def take() -> Prespawned | None:
    """The prespawned workers, once (None if none were started)."""
    global _started
    started, _started = _started, None
    return started


def _options(argv: Sequence[str]) -> argparse.Namespace | None:
    if not argv or argv[0] != "crawl" or {"-h", "--help"} & set(argv):
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--spiders-dir", default="spiders")
    parser.add_argument("--log-level", default="WARNING")
    for flag, dest in [("-o", "o"), ("-O", "big_o"), ("--output", "output"),
                       ("--overwrite-output", "overwrite")]:  # fmt: skip
        parser.add_argument(flag, action="append", default=[], dest=dest)
    try:
        options, _ = parser.parse_known_args(list(argv[1:]))
    except SystemExit:  # the real parser will say what is wrong
        return None
    feeds = [*options.o, *options.big_o, *options.output, *options.overwrite]
    if options.workers < 1 or any(f == "-" or f.startswith("-:") for f in feeds):
        return None  # a feed on stdout: workers' stdout goes to stderr (see crawl)
    return options


def prespawn(argv: Sequence[str]) -> Prespawned | None:
    """Start the workers ``crawl`` will need, if ``argv`` is a ``crawl`` command line."""
    global _started
    options = _options(argv)
    if options is None:
        return None
    argv_worker = [
        sys.executable, "-m", "spiderfarm.worker", "--connect-stdin",
        "--spiders-dir", options.spiders_dir, "--log-level", options.log_level,
    ]  # fmt: skip
    procs = []
    try:
        for _ in range(options.workers):
            procs.append(subprocess.Popen(argv_worker, stdin=subprocess.PIPE))
    except OSError:
        for proc in procs:
            proc.kill()
        return None
    _started = Prespawned(procs, options.spiders_dir, options.log_level)
    return _started
