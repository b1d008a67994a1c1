"""The command line: ``crawl``, ``demo``, ``status``, and the server and worker entry points.

The only place that configures logging or picks uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from .client import FrontierClient
from .errors import SpiderfarmError
from .feeds import FeedSpec
from .security import (
    AUTHKEY_ENV,
    load_authkey,
    parse_address,
    require_strong_key,
    write_new_authkey,
)
from .server import FarmServer, ServerConfig
from .settings import VERSION, Settings, parse_key_values

logger = logging.getLogger("spiderfarm")

__all__ = ["main", "server_main", "worker_main"]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _settings_help() -> str:
    rows = [f"  {name:<24} {default:<14} {text}" for name, default, text in Settings.describe()]
    return "settings (-s NAME=VALUE):\n" + "\n".join(rows)


def _appended(text: str) -> tuple[bool, str]:
    return (False, text)


def _overwritten(text: str) -> tuple[bool, str]:
    return (True, text)


def _add_spider_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spider", help="a spider name found in --spiders-dir, or a path to a .py file")
    p.add_argument(
        "-o",
        "--output",
        dest="feeds",
        action="append",
        default=[],
        type=_appended,
        metavar="FILE[:FORMAT]",
        help="append items to FILE (- for standard output); the format comes from its "
        "ending (.jsonl, .jl, .json, .csv, each also .gz) or from :FORMAT; repeatable",
    )
    p.add_argument(
        "-O",
        "--overwrite-output",
        dest="feeds",
        action="append",
        type=_overwritten,
        metavar="FILE[:FORMAT]",
        help="like -o, but empty FILE first (a job dir that resumes it cuts it back instead)",
    )
    p.add_argument(
        "-a",
        dest="spider_args",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="spider argument, set as an attribute of the spider",
    )
    p.add_argument(
        "-s",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="setting (see the list below)",
    )
    p.add_argument(
        "--spiders-dir", default="spiders", help="where spiders live (default: %(default)s)"
    )
    p.add_argument(
        "--job-dir", type=Path, help="persist the crawl here; run again with it to resume"
    )
    p.add_argument(
        "--dead-letters", metavar="FILE", help="write requests that failed for good here (JSONL)"
    )
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")


_FEED_FLAGS = frozenset({"-o", "--output", "-O", "--overwrite-output"})


def _join_stdout_feeds(argv: Sequence[str] | None) -> list[str]:
    """``-o -:jsonl`` as ``-o=-:jsonl``: argparse would take a value that starts with a
    dash for an option of its own."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(args) - 2, -1, -1):
        if args[i] in _FEED_FLAGS and args[i + 1].startswith("-:"):
            args[i : i + 2] = [f"{args[i]}={args[i + 1]}"]
    return args


def _feed_specs(args: argparse.Namespace) -> list[FeedSpec]:
    return [FeedSpec.parse(text, overwrite=overwrite) for overwrite, text in args.feeds]


@contextlib.contextmanager
def _stdout_for_items(feeds: Sequence[FeedSpec]) -> Iterator[bool]:
    """With a feed on standard output, everything else this process prints goes to
    stderr, so that stdout holds the items and nothing else. Yields whether it does."""
    if not any(spec.is_stdout for spec in feeds):
        yield False
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield True


def _server_config(
    args: argparse.Namespace, bind: tuple[str, int], authkey: bytes, feeds: list[FeedSpec]
) -> ServerConfig:
    return ServerConfig(
        spider_ref=args.spider,
        spiders_dir=Path(args.spiders_dir),
        spider_args=parse_key_values(args.spider_args, "-a"),
        overrides=parse_key_values(args.settings, "-s"),
        output=feeds,
        bind=bind,
        authkey=authkey,
        job_dir=getattr(args, "job_dir", None),
    )


# -- progress and summary ------------------------------------------------------------
class _Progress:
    def __init__(self, server: FarmServer, enabled: bool) -> None:
        self.server, self.enabled = server, enabled
        self._last = (time.monotonic(), 0)

    def __call__(self) -> None:
        if not self.enabled:
            return
        st = self.server.frontier.status()
        stats = st["stats"]
        now, pages = time.monotonic(), stats.get("pages", 0)
        rate = (pages - self._last[1]) / max(now - self._last[0], 1e-6)
        self._last = (now, pages)
        errors = sum(v for k, v in stats.items() if k.startswith(("failed/", "errors/")))
        line = (
            f"\r{pages} pages ({rate:.0f}/s)  queued {st['queued']}  in flight "
            f"{st['in_flight']}  items {stats.get('items', 0)}  errors {errors}  "
            f"workers {st['workers']}"
        )
        sys.stderr.write(line.ljust(100)[:140])
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def summary_lines(status: dict[str, Any], feeds: Sequence[object] = ()) -> list[str]:
    stats, elapsed = status["stats"], status["elapsed_s"]
    pages, items = stats.get("pages", 0), stats.get("items", 0)
    failed = {k: v for k, v in stats.items() if k.startswith(("failed/", "errors/"))}
    errors = sum(failed.values())
    lines = [
        f"crawl {status['close_reason'] or status['state']}: {pages} pages, {items} items, "
        f"{errors} errors in {elapsed:.2f}s ({pages / max(elapsed, 1e-9):.1f} pages/s)"
    ]
    for key in sorted(failed):
        lines.append(f"  {key}: {failed[key]}")
    filtered = {
        k: v
        for k, v in stats.items()
        if k.startswith(("filtered/", "retries/", "items/")) or k == "robots/unavailable"
    }
    for key in sorted(filtered):
        lines.append(f"  {key}: {filtered[key]}")
    for host, h in sorted(status.get("hosts", {}).items()):
        if h["failures"] >= 3:
            lines.append(
                f"  host backed off: {host} ({h['failures']} connection failures in a row, "
                f"delay {h['delay_s']}s)"
            )
    for host, h in sorted(status.get("hosts", {}).items()):
        asked = h.get("crawl_delay_asked_s")
        if asked:
            lines.append(
                f"  host crawl-delay capped: {host} (robots.txt asks {asked:.6g}s, "
                f"obeyed {h['delay_s']}s: max_crawl_delay_s)"
            )
    for url, reason, attempts in status["dead_letters"][:20]:
        lines.append(f"  dead letter: {url} ({reason}, {attempts} attempts)")
    if len(status["dead_letters"]) > 20:
        lines.append(f"  ... and {len(status['dead_letters']) - 20} more dead letters")
    if feeds:
        lines.append(f"items written to {', '.join(str(feed) for feed in feeds)}")
    return lines


# -- crawl -----------------------------------------------------------------------------
def _spawn_workers(
    n: int,
    address: tuple[str, int],
    authkey: bytes,
    spiders_dir: str,
    log_level: str,
    stdout: int | None = None,
) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, AUTHKEY_ENV: authkey.hex()}
    argv = [
        sys.executable,
        "-m",
        "spiderfarm.worker",
        "--connect",
        f"{address[0]}:{address[1]}",
        "--spiders-dir",
        spiders_dir,
        "--log-level",
        log_level,
    ]
    return [subprocess.Popen(argv, env=env, stdout=stdout) for _ in range(n)]


def run_crawl(args: argparse.Namespace) -> int:
    feeds = _feed_specs(args)
    with _stdout_for_items(feeds) as items_on_stdout:
        return _crawl(args, feeds, items_on_stdout)


def _crawl(args: argparse.Namespace, feeds: list[FeedSpec], items_on_stdout: bool) -> int:
    authkey = secrets.token_bytes(32)
    server = FarmServer(_server_config(args, ("127.0.0.1", 0), authkey, feeds))
    server.seed()
    address = server.listen()
    workers = _spawn_workers(
        args.workers, address, authkey, args.spiders_dir, args.log_level,
        stdout=sys.stderr.fileno() if items_on_stdout else None,  # a spider's print()s too
    )  # fmt: skip
    progress = _Progress(server, sys.stderr.isatty() and not args.quiet)
    interrupts = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            sys.stderr.write("\nstopping: finishing in-flight requests (Ctrl-C again to quit)\n")
            server.request_close("shutdown")  # no lock in a handler: it may interrupt its holder
        else:
            for proc in workers:
                proc.kill()
            raise KeyboardInterrupt  # server.stop() below closes (and flushes) the feed

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:

        def tick() -> None:
            progress()
            if all(p.poll() is not None for p in workers):
                logger.error("all workers exited before the crawl finished")
                server.frontier.close("workers_exited")

        server.wait(on_tick=tick, tick_s=0.25)
        progress.done()
        server.linger(len(workers), timeout_s=10)
        codes = [_reap(p, 15) for p in workers]
    except KeyboardInterrupt:
        for proc in workers:
            _reap(proc, 1)
        server.stop()
        _report_problems(server)
        sys.stderr.write("interrupted: items so far are in the feed\n")
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    server.stop()  # first: what closing the feeds finds out belongs in the summary
    status = server.frontier.status(detail=True)
    for line in summary_lines(status, feeds):
        print(line, flush=True)
    if args.dead_letters:
        _write_dead_letters(args.dead_letters, status["dead_letters"])
    if _report_problems(server):
        return 1
    bad = [c for c in codes if c != 0]
    if 2 in bad:  # a worker could not start: a pipeline, middleware or spider error
        print(
            f"error: {bad.count(2)} worker(s) stopped before crawling (the reason is above)",
            file=sys.stderr,
        )
        return 2
    if bad:
        print(f"warning: {len(bad)} worker(s) exited with errors: {bad}", file=sys.stderr)
        return 1
    return 0


def _report_problems(server: FarmServer) -> bool:
    """Print why a feed or the job dir does not hold the whole crawl (a full disk, say);
    True if anything was printed."""
    problems = server.problems()
    for text in problems:
        print(f"error: {text}", file=sys.stderr, flush=True)
    return bool(problems)


def _write_dead_letters(path: str, dead: list[tuple[str, str, int]]) -> None:
    """The requests that failed for good, one JSON object per line."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            for url, reason, attempts in dead:
                fh.write(json.dumps({"url": url, "reason": reason, "attempts": attempts}) + "\n")
    except OSError as exc:
        print(f"error: cannot write dead letters to {path!r}: {exc.strerror}", file=sys.stderr)
        return
    print(f"{len(dead)} dead letters written to {path}", flush=True)


def _reap(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- demo ------------------------------------------------------------------------------
def run_demo(args: argparse.Namespace) -> int:
    spiders_dir = _default_spiders_dir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spiderfarm.demosite", "--port", "0", "--pages", str(args.pages)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "serving http://127.0.0.1:PORT/ (N pages)"
    if not line.startswith("serving "):
        proc.kill()
        proc.wait()
        raise SpiderfarmError(f"the demo site failed to start: {line.strip() or 'no output'}")
    base_url = line.split()[1]
    try:
        with _stdout_for_items([FeedSpec.parse(args.output, overwrite=True)]):
            print(f"demo site: {base_url} ({args.pages} product pages, served locally)", flush=True)
        crawl_args = argparse.Namespace(
            spider="catalogue",
            feeds=[(True, args.output)],  # the demo's file is replaced, not appended to
            spider_args=[f"start_url={base_url}"],
            settings=args.settings,
            spiders_dir=str(spiders_dir),
            log_level=args.log_level,
            workers=args.workers,
            quiet=False,
            dead_letters=None,
        )
        return run_crawl(crawl_args)
    finally:
        proc.terminate()
        proc.wait(10)


def _default_spiders_dir() -> Path:
    local = Path("spiders")
    if (local / "catalogue.py").is_file():
        return local
    return Path(__file__).resolve().parent.parent / "spiders"


# -- status ----------------------------------------------------------------------------
def run_status(args: argparse.Namespace) -> int:
    key = _require_authkey(args.authkey_file)
    detail = bool(args.hosts or not args.json)

    async def go() -> dict[str, Any]:
        client = FrontierClient(parse_address(args.connect), key, give_up_s=5)
        try:
            return await client.status(detail=detail)
        finally:
            await client.close()

    while True:
        status = _run_async(go())
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True), flush=True)
        else:
            text = "\n".join(status_table(status, args.connect))
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: refresh in place
            print(text, flush=True)
        if not args.watch or status["state"] == "finished":
            return 0
        time.sleep(args.watch)


def status_table(status: dict[str, Any], where: str = "", busiest: int = 20) -> list[str]:
    """A running server's state for a person: totals, workers, the busiest hosts, errors."""
    stats = status["stats"]
    pages, items, elapsed = stats.get("pages", 0), stats.get("items", 0), status["elapsed_s"]
    failed = {k: v for k, v in stats.items() if k.startswith(("failed/", "errors/"))}
    reason = f" ({status['close_reason']})" if status["close_reason"] else ""
    at = f" at {where}" if where else ""
    lines = [
        f"crawl {status['state']}{reason}{at}, {elapsed:.0f}s",
        f"  pages {pages} ({pages / max(elapsed, 1e-9):.1f}/s)   items {items}   queued "
        f"{status['queued']}   in flight {status['in_flight']}   seen {status['seen']}   "
        f"errors {sum(failed.values())}   dead letters {stats.get('dead_letters', 0)}",
    ]
    workers = status.get("worker_detail", {})
    if workers:
        lines += ["", f"  {'worker':<40} {'state':<6} {'leases':>6} {'last seen':>10} "
                  f"{'loop lag':>9}"]  # fmt: skip
        for name, w in sorted(workers.items()):
            state = "alive" if w["alive"] else "dead"
            lines.append(
                f"  {name[:40]:<40} {state:<6} {w['leases']:>6} {w['last_seen_s']:>9.1f}s "
                f"{w['loop_lag_s']:>8.2f}s"
            )
    hosts = status.get("hosts", {})
    if hosts:
        top = sorted(hosts.items(), key=lambda kv: (-kv[1]["in_flight"], -kv[1]["queued"],
                                                     -kv[1]["pages"], kv[0]))[:busiest]  # fmt: skip
        lines += ["", f"  {'host':<40} {'queued':>7} {'in flight':>9} {'pages':>7} {'errors':>6} "
                  f"{'delay':>7}"]  # fmt: skip
        for host, h in top:
            lines.append(
                f"  {host[:40]:<40} {h['queued']:>7} {h['in_flight']:>9} {h['pages']:>7} "
                f"{h['errors']:>6} {h['delay_s']:>6.2f}s"
            )
        if len(hosts) > busiest:
            lines.append(f"  ... and {len(hosts) - busiest} more hosts (--json for all)")
    if failed:
        lines += ["", "  errors by reason:"]
        lines += [f"    {k}: {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1])]
    return lines


def _require_authkey(path: str | None) -> bytes:
    key = load_authkey(path, os.environ.get(AUTHKEY_ENV))
    if key is None:
        raise SpiderfarmError(
            "no authkey: pass --authkey-file FILE (the file the server printed) "
            f"or set {AUTHKEY_ENV}"
        )
    return key


# -- entry points ------------------------------------------------------------------------
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
        epilog=_settings_help(),
        formatter_class=fmt,
    )
    _add_spider_options(crawl)
    crawl.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: CPU count, %(default)s)",
    )
    crawl.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    demo = sub.add_parser(
        "demo",
        help="crawl a bundled local demo site and print the summary",
        epilog=_settings_help(),
        formatter_class=fmt,
    )
    demo.add_argument(
        "--pages", type=int, default=3000, help="demo site size (default %(default)s)"
    )
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    demo.add_argument(
        "-o",
        "--output",
        default="demo-items.jsonl",
        help="feed file, replaced if it exists (default %(default)s)",
    )
    demo.add_argument("-s", dest="settings", action="append", default=[], metavar="NAME=VALUE")
    demo.add_argument("--log-level", default="WARNING")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_join_stdout_feeds(argv))
    _setup_logging(args.log_level)
    handlers = {"crawl": run_crawl, "demo": run_demo, "status": run_status}
    try:
        if getattr(args, "workers", 1) < 1:
            raise SpiderfarmError("--workers must be at least 1")
        return int(handlers[args.command](args))
    except SpiderfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def server_main(argv: Sequence[str] | None = None) -> int:
    """``python -m spiderfarm.server``: the frontier alone, for workers on other machines."""
    parser = argparse.ArgumentParser(
        prog="python -m spiderfarm.server",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a crawl's frontier to workers that connect over TCP.",
    )
    _add_spider_options(parser)
    parser.add_argument(
        "--bind",
        default="127.0.0.1:5000",
        metavar="HOST:PORT",
        help="address to listen on (default %(default)s; port 0 picks one)",
    )
    parser.add_argument("--authkey-file", help=f"file holding the key (or set {AUTHKEY_ENV})")
    args = parser.parse_args(_join_stdout_feeds(argv))
    _setup_logging(args.log_level if args.log_level != "WARNING" else "INFO")
    try:
        feeds = _feed_specs(args)
    except SpiderfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with _stdout_for_items(feeds):
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
        server = FarmServer(_server_config(args, bind, key, feeds))
        server.seed()
        host, port = server.listen()
    except SpiderfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.bind}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"spiderfarm server listening on {host}:{port}", flush=True)
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
        server.wait()
        server.linger(expected_workers=1_000_000, timeout_s=10)
    except KeyboardInterrupt:
        server.stop()
        _report_problems(server)
        return 130
    server.stop()
    status = server.frontier.status(detail=True)
    for line in summary_lines(status, feeds):
        print(line, flush=True)
    if args.dead_letters:
        _write_dead_letters(args.dead_letters, status["dead_letters"])
    return 1 if _report_problems(server) else 0


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m spiderfarm.worker``: connect to a server and crawl until it is done."""
    from .worker import Worker  # here, not at the top: only workers need aiohttp loaded

    parser = argparse.ArgumentParser(
        prog="python -m spiderfarm.worker", description="Crawl for a spiderfarm server."
    )
    parser.add_argument("--connect", required=True, metavar="HOST:PORT")
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
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        key = _require_authkey(args.authkey_file)
        client = FrontierClient(parse_address(args.connect), key, give_up_s=args.give_up_s)
        worker = Worker(client, spiders_dir=args.spiders_dir, concurrency=args.concurrency)
        return int(_run_async(worker.run()))
    except SpiderfarmError as exc:
        print(f"error: worker: {exc}", file=sys.stderr)
        return 2
