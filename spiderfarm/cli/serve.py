"""The entry point of ``python -m spiderfarm.server``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from ..console import parse_console_address
from ..errors import SpiderfarmError
from ..feeds import FeedSpec
from ..runtime import setup_logging
from ..security import (
    AUTHKEY_ENV,
    load_authkey,
    parse_address,
    require_strong_key,
    write_new_authkey,
)
from ..server import FarmServer
from .common import (
    add_spider_options,
    feed_specs,
    join_stdout_feeds,
    report_problems,
    server_config,
    settings_help,
    stdout_for_items,
    write_dead_letters,
)
from .console import LogStats, add_console_options, start_console
from .crawl import summary_lines


def server_main(argv: Sequence[str] | None = None) -> int:
    """``python -m spiderfarm.server``: the frontier alone, for workers on other machines."""
    parser = argparse.ArgumentParser(
        prog="python -m spiderfarm.server",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a crawl's frontier to workers that connect over TCP.",
    )
    add_spider_options(parser)
    parser.add_argument(
        "--bind",
        default="127.0.0.1:5000",
        metavar="HOST:PORT",
        help="address to listen on (default %(default)s; port 0 picks one)",
    )
    parser.add_argument("--authkey-file", help=f"file holding the key (or set {AUTHKEY_ENV})")
    add_console_options(parser, "127.0.0.1:0")
    args = parser.parse_args(join_stdout_feeds(argv))
    setup_logging(args.log_level if args.log_level != "WARNING" else "INFO")
    try:
        feeds = feed_specs(args)
    except SpiderfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with stdout_for_items(feeds):
        return _serve(args, feeds)


def _serve(args: argparse.Namespace, feeds: list[FeedSpec]) -> int:
    try:
        key = load_authkey(args.authkey_file, os.environ.get(AUTHKEY_ENV))
        bind = parse_address(args.bind)
        if key is None:
            key, path = write_new_authkey()
            print(
                f"authkey written to {path} (mode 0600): give it to workers with --authkey-file",
                flush=True,
            )
        require_strong_key(key, bind[0])
        if not args.no_console:
            parse_console_address(args.console)  # a bad --console fails before anything
        server = FarmServer(server_config(args, bind, key, feeds))
        server.seed()
        host, port = server.listen()
    except SpiderfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.bind}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"spiderfarm server listening on {host}:{port}", flush=True)
    try:
        console = start_console(args, server, key, key_known=True)
    except SpiderfarmError as exc:
        server.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _serve_until_done(args, server, feeds)
    finally:
        if console is not None:
            console.stop()


def _serve_until_done(args: argparse.Namespace, server: FarmServer, feeds: list[FeedSpec]) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            raise KeyboardInterrupt
        stopping = True
        server.request_close("shutdown")  # no lock in a handler: it may interrupt its holder

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    try:
        server.wait(on_tick=LogStats(server, server.settings.log_stats_s))
        server.linger(expected_workers=1_000_000, timeout_s=10)
    except KeyboardInterrupt:
        server.stop()
        report_problems(server)
        return 130
    server.stop()
    status = server.frontier.status(detail=True)
    for line in summary_lines(status, feeds):
        print(line, flush=True)
    if args.dead_letters:
        write_dead_letters(args.dead_letters, status["dead_letters"])
    return 1 if report_problems(server) else 0
