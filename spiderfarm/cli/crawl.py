"""``crawl`` and ``demo``: a whole farm on this machine, with a progress line and a summary."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol

from .. import prespawn
from ..console import parse_console_address
from ..errors import SpiderfarmError
from ..feeds import FeedSpec
from ..security import (
    AUTHKEY_ENV,
    load_authkey,
    parse_address,
    require_strong_key,
    write_new_authkey,
)
from ..server import FarmServer
from .common import (
    feed_specs,
    logger,
    report_problems,
    server_config,
    stdout_for_items,
    write_dead_letters,
)
from .console import LogStats, start_console


class _Process(Protocol):
    """A worker process: a ``subprocess.Popen`` or one forked early (``ForkedWorker``)."""

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


def _reap(proc: _Process, timeout_s: float) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


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
    for key, value in sorted(status.get("spider_stats", {}).items()):
        lines.append(f"  spider stat {key}: {value:g}" if isinstance(value, float) else
                     f"  spider stat {key}: {value}")  # fmt: skip
    dropped = status.get("results", {}).get("dropped", 0)
    if dropped:
        lines.append(f"  results dropped (the result queue was full): {dropped}")
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


NO_PIN_HELP = (
    "do not pin each worker to a CPU of its own (they are when there are as many CPUs as "
    "workers, and the workers are forked)"
)


def _spawn_workers(
    n: int,
    address: tuple[str, int],
    authkey: bytes,
    spiders_dir: str,
    log_level: str,
    no_pin: bool,
    stdout: int | None = None,
) -> list[_Process]:
    started = prespawn.take()
    if started is not None:
        if started.matches(n, spiders_dir, log_level, no_pin, stdout):
            return list(started.send(address, authkey))
        started.dismiss()
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
    feeds = feed_specs(args)
    with stdout_for_items(feeds) as items_on_stdout:
        return _crawl(args, feeds, items_on_stdout)


def _crawl_address(args: argparse.Namespace) -> tuple[tuple[str, int], bytes, str]:
    """Where ``crawl`` listens and its key: a fresh key only its workers know, unless
    clients must reach it (``--serve``: the key from ``--authkey-file`` or a new file)."""
    bind = parse_address(args.bind)
    key_file = args.authkey_file or ""
    key = load_authkey(args.authkey_file, None) if key_file else None
    if key is None and args.serve:
        key, path = write_new_authkey()
        key_file = str(path)
    if key is None:
        key = secrets.token_bytes(32)
    require_strong_key(key, bind[0])
    return bind, key, key_file


def _crawl(args: argparse.Namespace, feeds: list[FeedSpec], items_on_stdout: bool) -> int:
    bind, authkey, key_file = _crawl_address(args)
    if not args.no_console:
        parse_console_address(args.console)  # a bad --console fails before anything starts
    server = FarmServer(server_config(args, bind, authkey, feeds))
    server.seed()
    address = server.listen()
    if args.serve:
        where = f"{address[0]}:{address[1]}"
        key_hint = f" --authkey-file {key_file}" if key_file else ""
        print(
            f"serving on {where}: push work with `python -m spiderfarm push --connect "
            f"{where}{key_hint} URLS.txt`, read results with `python -m spiderfarm results "
            f"--connect {where}{key_hint}`; Ctrl-C stops",
            flush=True,
        )
    # The workers first: they join and crawl while the console loads its web app.
    workers = _spawn_workers(
        args.workers, address, authkey, args.spiders_dir, args.log_level, args.no_pin,
        stdout=sys.stderr.fileno() if items_on_stdout else None,  # a spider's print()s too
    )  # fmt: skip
    try:
        # On stderr, with the progress line: stdout holds the summary (or the items).
        console = start_console(args, server, authkey, key_known=bool(key_file), stream=sys.stderr)
    except BaseException:
        for proc in workers:
            proc.kill()
            _reap(proc, 5)
        server.stop()
        raise
    try:
        return _run_farm(args, server, workers, feeds)
    finally:
        if console is not None:
            console.stop()


def _run_farm(
    args: argparse.Namespace,
    server: FarmServer,
    workers: list[_Process],
    feeds: list[FeedSpec],
) -> int:
    progress = _Progress(server, sys.stderr.isatty() and not args.quiet)
    log_stats = LogStats(server, server.settings.log_stats_s)
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
            log_stats()
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
        report_problems(server)
        sys.stderr.write("interrupted: items so far are in the feed\n")
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for proc in workers:  # reaped above, unless something unforeseen went wrong
            if proc.poll() is None:
                proc.kill()
    server.stop()  # first: what closing the feeds finds out belongs in the summary
    status = server.frontier.status(detail=True)
    for line in summary_lines(status, feeds):
        print(line, flush=True)
    if args.dead_letters:
        write_dead_letters(args.dead_letters, status["dead_letters"])
    if report_problems(server):
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


def run_demo(args: argparse.Namespace) -> int:
    spiders_dir = prespawn.demo_spiders_dir()
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
        with stdout_for_items([FeedSpec.parse(args.output, overwrite=True)]):
            print(f"demo site: {base_url} ({args.pages} product pages, served locally)", flush=True)
        crawl_args = argparse.Namespace(
            spider="catalogue",
            feeds=[(True, args.output)],  # the demo's file is replaced, not appended to
            spider_args=[f"start_url={base_url}"],
            settings=args.settings,
            spiders_dir=str(spiders_dir),
            log_level=args.log_level,
            workers=args.workers,
            no_pin=args.no_pin,
            quiet=False,
            dead_letters=None,
            serve=False,
            bind="127.0.0.1:0",
            authkey_file=None,
            console=args.console,
            no_console=args.no_console,
            console_token_file=None,
        )
        return run_crawl(crawl_args)
    finally:
        proc.terminate()
        proc.wait(10)
