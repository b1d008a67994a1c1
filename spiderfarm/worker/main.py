"""``python -m spiderfarm.worker``: connect to a server and crawl until it is done.

It imports the worker and what the worker needs, nothing of the server's, the console's
or the other commands' (``spiderfarm.cli``): a worker starts in the time it takes to
import aiohttp, parsel and lxml. ``crawl`` forks its workers from here (see
``spiderfarm.prespawn``): ``run_told`` is the same crawl, told where to go on a pipe.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..client import FrontierClient
from ..errors import SpiderfarmError
from ..runtime import run_async, setup_logging
from ..security import AUTHKEY_ENV, parse_address, require_authkey
from .pump import Worker

__all__ = ["run_told", "worker_main"]


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m spiderfarm.worker``: connect to a server and crawl until it is done."""
    return _run(_parser().parse_args(argv), None)


def run_told(fd: int, spiders_dir: str, log_level: str) -> int:
    """``python -m spiderfarm.worker --connect-stdin`` reading from the pipe ``fd``
    (crawl's forked workers); 0 at once if the pipe closes unwritten."""
    argv = ["--connect-stdin", "--spiders-dir", spiders_dir, "--log-level", log_level]
    return _run(_parser().parse_args(argv), fd)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spiderfarm.worker", description="Crawl for a spiderfarm server."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="HOST:PORT")
    where.add_argument(
        "--connect-stdin", action="store_true",
        help="read 'HOST:PORT KEYHEX' from standard input (the key is then in no "
        "environment, command line or file)",
    )  # fmt: skip
    parser.add_argument("--authkey-file", help=f"file holding the key (or set {AUTHKEY_ENV})")
    parser.add_argument("--concurrency", type=int, help="requests in flight (default: setting)")
    parser.add_argument("--spiders-dir", default="spiders")
    parser.add_argument(
        "--give-up-s",
        type=float,
        default=30.0,
        help="how long to keep retrying an unreachable server (default %(default)s)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser


def _run(args: argparse.Namespace, told_fd: int | None) -> int:
    """Crawl as ``args`` say; with ``--connect-stdin`` the address and key are read from
    ``told_fd`` (standard input if None)."""
    setup_logging(args.log_level)
    try:
        if args.connect_stdin:
            told = _told_where(sys.stdin.fileno() if told_fd is None else told_fd)
            if told is None:
                return 0  # the pipe closed unwritten: whoever started us changed its mind
            connect, key = told
        else:
            connect, key = args.connect, require_authkey(args.authkey_file)
        client = FrontierClient(parse_address(connect), key, give_up_s=args.give_up_s)
        worker = Worker(client, spiders_dir=args.spiders_dir, concurrency=args.concurrency)
        return int(run_async(worker.run()))
    except SpiderfarmError as exc:
        print(f"error: worker: {exc}", file=sys.stderr)
        return 2


def _told_where(fd: int) -> tuple[str, bytes] | None:
    """``(HOST:PORT, key)`` from the line written to ``fd``, or None if the pipe closed
    without one."""
    line = b""
    try:
        while not line.endswith(b"\n"):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            line += chunk
    except KeyboardInterrupt:  # Ctrl-C while crawl was still starting
        return None
    if not line.strip():
        return None
    connect, _, key_hex = line.decode("ascii", "replace").strip().partition(" ")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        key = b""
    if not connect or not key:
        raise SpiderfarmError("--connect-stdin: expected 'HOST:PORT KEYHEX' on stdin")
    return connect, key
