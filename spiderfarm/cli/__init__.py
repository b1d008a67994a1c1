"""The command line: ``crawl``, ``demo``, ``status``, ``push``, ``results``,
``console-token``, and the server's entry point.

One module per command: ``crawl`` (``crawl`` and ``demo``), ``status``, ``clients``
(``push`` and ``results``), ``serve`` (``spiderfarm.server``), ``console``; ``common``
holds what they share. The worker's entry point is ``spiderfarm.worker.main``, which
imports nothing from here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import SpiderfarmError
from ..runtime import setup_logging
from ..settings import VERSION
from .clients import add_client_commands, run_push, run_results
from .common import add_spider_options, join_stdout_feeds, settings_help
from .console import add_console_options, run_console_token
from .crawl import NO_PIN_HELP, run_crawl, run_demo, summary_lines
from .serve import server_main
from .status import run_status, status_table

__all__ = ["main", "server_main", "status_table", "summary_lines"]


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m spiderfarm",
        description=("spiderfarm: a distributed web-scraping framework"),
    )
    parser.add_argument("--version", action="version", version=f"spiderfarm {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    crawl = sub.add_parser(
        "crawl",
        help="run a spider on this machine with N worker processes",
        epilog=settings_help(),
        formatter_class=fmt,
    )
    add_spider_options(crawl)
    crawl.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: CPU count, %(default)s)",
    )
    crawl.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    crawl.add_argument("--no-pin", action="store_true", help=NO_PIN_HELP)
    crawl.add_argument(
        "--bind", default="127.0.0.1:0", metavar="HOST:PORT",
        help="where the farm listens (default %(default)s: loopback, a free port)",
    )  # fmt: skip
    crawl.add_argument(
        "--authkey-file",
        help="the farm's key (with --serve, a new key file is written if none is given)",
    )
    add_console_options(crawl, "127.0.0.1:0")
    demo = sub.add_parser(
        "demo",
        help="crawl a bundled local demo site and print the summary",
        epilog=settings_help(),
        formatter_class=fmt,
    )
    demo.add_argument(
        "--pages", type=int, default=3000, help="demo site size (default %(default)s)"
    )
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    demo.add_argument("--no-pin", action="store_true", help=NO_PIN_HELP)
    demo.add_argument(
        "-o",
        "--output",
        default="demo-items.jsonl",
        help="feed file, replaced if it exists (default %(default)s)",
    )
    demo.add_argument("-s", dest="settings", action="append", default=[], metavar="NAME=VALUE")
    demo.add_argument("--log-level", default="WARNING")
    demo.add_argument(
        "--console", default="127.0.0.1:0", metavar="HOST:PORT",
        help="serve the web console here (default %(default)s: loopback, a free port)",
    )  # fmt: skip
    demo.add_argument("--no-console", action="store_true", help="no web console")
    token = sub.add_parser(
        "console-token", help="print the console token a farm with this key asks for off loopback"
    )
    token.add_argument("--authkey-file", help="the farm's key file (or set SPIDERFARM_AUTHKEY)")
    token.add_argument("--log-level", default="WARNING")
    status = sub.add_parser("status", help="print a running server's state")
    status.add_argument("--connect", required=True, metavar="HOST:PORT")
    status.add_argument("--authkey-file")
    status.add_argument("--json", action="store_true", help="the whole state as JSON")
    status.add_argument(
        "--hosts", action="store_true", help="with --json: every host and dead letter"
    )
    status.add_argument(
        "--watch", type=float, nargs="?", const=2.0, default=0.0, metavar="S",
        help="refresh in place every S seconds (default 2) until the crawl finishes",
    )  # fmt: skip
    status.add_argument("--log-level", default="WARNING")
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(join_stdout_feeds(argv))
    setup_logging(args.log_level)
    handlers = {
        "crawl": run_crawl,
        "demo": run_demo,
        "status": run_status,
        "push": run_push,
        "results": run_results,
        "console-token": run_console_token,
    }
    try:
        if getattr(args, "workers", 1) < 1:
            raise SpiderfarmError("--workers must be at least 1")
        return int(handlers[args.command](args))
    except SpiderfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
