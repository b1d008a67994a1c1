"""The console options of ``crawl`` and ``spiderfarm.server``, starting the console,
``console-token``, and the periodic stats line (Scrapy's LogStats) for a log file."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TextIO

from ..console import Console, Controls, console_token, load_console_token, parse_console_address
from ..errors import SpiderfarmError
from ..security import is_loopback, require_authkey, require_strong_key
from ..server import FarmServer

__all__ = ["LogStats", "add_console_options", "run_console_token", "start_console"]

stats_logger = logging.getLogger("spiderfarm.logstats")


def add_console_options(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--console", default=default, metavar="HOST:PORT",
        help="serve the web console and /metrics here (default %(default)s: loopback, a free "
        "port; the URL is printed); off loopback a token is required",
    )  # fmt: skip
    p.add_argument("--no-console", action="store_true", help="no web console")
    p.add_argument(
        "--console-token-file", metavar="FILE",
        help="the console's token (default off loopback: derived from the authkey; "
        "`console-token` prints it)",
    )  # fmt: skip


def start_console(
    args: argparse.Namespace,
    server: FarmServer,
    authkey: bytes,
    key_known: bool,
    stream: TextIO | None = None,
) -> Console | None:
    """The console the options ask for, serving; None with ``--no-console``. Prints its
    URL to ``stream`` (stdout by default). ``key_known``: the authkey is in a file its
    operator has (not ``crawl``'s own).

    Raises:
        SpiderfarmError: a bad address or token file, an address that cannot be bound, or
            a non-loopback console with no token to give.
    """
    if args.no_console:
        return None
    bind = parse_console_address(args.console)
    token = None
    if args.console_token_file:
        token = load_console_token(args.console_token_file)
    elif not is_loopback(bind[0]):
        if not key_known:
            raise SpiderfarmError(
                f"--console {args.console}: a console off loopback needs a token, and this "
                "farm's key is its own: give --authkey-file KEY (the token is derived from "
                "it) or --console-token-file FILE"
            )
        require_strong_key(authkey, bind[0])
        token = console_token(authkey)
    frontier = server.frontier
    controls = Controls(
        pause=frontier.pause,
        resume=frontier.resume,
        stop=lambda: server.request_close("shutdown"),
        submit=server.submit if server.config.serve else None,
    )
    console = Console(
        frontier.status, server.settings.to_dict(), controls, bind, token,
        serving=server.config.serve,
    )  # fmt: skip
    url = console.start()
    how = (
        " (token required: `python -m spiderfarm console-token --authkey-file KEY` prints it)"
        if token is not None and not args.console_token_file
        else " (token required: the one in --console-token-file)"
        if token is not None
        else ""
    )
    print(f"console: {url}{how}; metrics: {url}metrics", file=stream or sys.stdout, flush=True)
    return console


def run_console_token(args: argparse.Namespace) -> int:
    """``console-token``: the token a farm with this key asks for off loopback."""
    print(console_token(require_authkey(args.authkey_file)))
    return 0


class LogStats:
    """A stats line every ``every_s`` when stderr is not a terminal (a service, a CI job,
    ``nohup``), worded as Scrapy's LogStats words it. Called on the server's ticks."""

    def __init__(self, server: FarmServer, every_s: float, enabled: bool | None = None) -> None:
        self.server = server
        on = not sys.stderr.isatty() if enabled is None else enabled
        self.every_s = every_s if on else 0.0
        self._last = (time.monotonic(), 0, 0)
        if self.every_s and stats_logger.getEffectiveLevel() > logging.INFO:
            stats_logger.setLevel(logging.INFO)  # asked for by log_stats_s, whatever --log-level

    def __call__(self) -> None:
        if not self.every_s:
            return
        now = time.monotonic()
        if now - self._last[0] < self.every_s:
            return
        self.log(now)

    def log(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        then, pages0, items0 = self._last
        stats = self.server.frontier.status()["stats"]
        pages, items = stats.get("pages", 0), stats.get("items", 0)
        per_min = 60.0 / max(now - then, 1e-9)
        self._last = (now, pages, items)
        stats_logger.info(
            "Crawled %d pages (at %d pages/min), scraped %d items (at %d items/min)",
            pages, (pages - pages0) * per_min, items, (items - items0) * per_min,
        )  # fmt: skip
