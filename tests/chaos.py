"""A chaos run: one crawl under random faults, then a check that the feed is exact.

    python -m tests.chaos --seed 7 --seconds 180 [--pages 3000] [--workers 3]

A real server (``python -m spiderfarm.server`` with ``--job-dir``) and real workers crawl
a local site of ``--pages`` pages (a tree of links; some pages answer 503 at first, some
are slow, some carry an item the feed cannot hold). While it runs, faults drawn from a
seeded generator hit it: ``kill -9`` of a worker (a new one is started), ``SIGSTOP`` of a
worker for up to 3 s, ``kill -9`` of the server (started again with the same command, so
it resumes from the job dir), and, when the feed is on a tmpfs the runner could mount
(root), the disk filling up and emptying again. Faults stop after ``--seconds``; then
the crawl is left to finish (restarting the server if a fault ended it).

The feed must then hold exactly one item per page, each page once, and no bad item.
Prints the faults it survived and exits 1 if the feed is not exact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.sites import REPO_ROOT, subprocess_environ

SPIDER = '''
from spiderfarm import Request, Spider


class Chaos(Spider):
    name = "chaos"
    base = ""
    custom_settings = {
        "obey_robots": False, "autothrottle": False, "per_host_concurrency": 32,
        "worker_timeout_s": 2, "lease_timeout_s": 20, "retry_backoff_s": 0.05,
        "max_retries": 6,
    }

    def start_requests(self):
        yield Request(self.base + "p/0")

    def parse(self, response):
        page = response.url.rsplit("/", 1)[1]
        yield {"page": int(page)}
        if response.css("meta[name=bad]"):
            yield {"page": int(page), "bad": "\\ud800"}  # a lone surrogate: bad_item
        yield from response.follow_all(css="a")
'''


def make_site(pages: int, seed: int) -> web.Application:
    """``/p/{i}``: links to ``/p/{10i+1}`` .. ``/p/{10i+10}`` (a tree), some extra links
    back; page i answers 503 on its first hit when ``i % 7 == 3``, is slow when
    ``i % 53 == 5``, and holds a bad item when ``i % 31 == 4``."""
    rng = random.Random(seed)
    back = {i: rng.randrange(pages) for i in range(pages)}
    hits: Counter[int] = Counter()

    async def page(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        if not 0 <= i < pages:
            raise web.HTTPNotFound()
        hits[i] += 1
        if i % 7 == 3 and hits[i] == 1:
            return web.Response(status=503, text="try again")
        if i % 53 == 5:
            await asyncio.sleep(0.5)
        children = [j for j in range(10 * i + 1, 10 * i + 11) if j < pages]
        links = "".join(f'<a href="/p/{j}">{j}</a>' for j in [*children, back[i]])
        bad = '<meta name="bad" content="1">' if i % 31 == 4 else ""
        body = f"<html><head><title>{i}</title>{bad}</head><body>{links}</body></html>"
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/p/{i}", page)
    return app


class Site:
    """The site on a thread of its own, on 127.0.0.1:0."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = self._runner = web.AppRunner(self.app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Site:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Farm:
    workdir: Path
    feed: Path
    spider: Path
    base: str
    workers: int
    port: int = field(default_factory=free_port)
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    server: subprocess.Popen[bytes] | None = None
    worker_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server_runs: int = 0
    log: Path | None = None

    def _env(self) -> dict[str, str]:
        return {**subprocess_environ(), "SPIDERFARM_AUTHKEY": self.key}

    def _out(self) -> int:
        assert self.log is not None
        return os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def start_server(self) -> None:
        self.server_runs += 1
        argv = [sys.executable, "-m", "spiderfarm.server", str(self.spider), "-o",
                str(self.feed), "--job-dir", str(self.workdir / "job"), "--bind",
                f"127.0.0.1:{self.port}", "-a", f"base={self.base}"]  # fmt: skip
        out = self._out()
        self.server = subprocess.Popen(argv, cwd=REPO_ROOT, env=self._env(), stdout=out,
                                       stderr=out, stdin=subprocess.DEVNULL)  # fmt: skip
        os.close(out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.server.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return
            time.sleep(0.05)

    def start_worker(self) -> None:
        argv = [sys.executable, "-m", "spiderfarm.worker", "--connect",
                f"127.0.0.1:{self.port}", "--give-up-s", "60"]  # fmt: skip
        out = self._out()
        self.worker_procs.append(
            subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self._env(), stdout=out, stderr=out,
                stdin=subprocess.DEVNULL,
            )
        )
        os.close(out)

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.worker_procs if p.poll() is None]

    def stop(self) -> None:
        for proc in [*self.worker_procs, *([self.server] if self.server else [])]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


class Disk:
    """A small tmpfs for the feed (root only) that the runner can fill and empty."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path, self.size_mb, self.mounted = path, size_mb, False
        self.filler = path / "filler"

    def __enter__(self) -> Disk:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and shutil.which("mount"):
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
                capture_output=True, check=False,
            )  # fmt: skip
            self.mounted = done.returncode == 0
        return self

    def fill(self) -> None:
        with contextlib.suppress(OSError), self.filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * (1 << 20))

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


def run(seed: int, seconds: float, pages: int, workers: int) -> int:
    rng = random.Random(seed)
    faults: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, Site(make_site(pages, seed)) as site:
        workdir = Path(tmp)
        spider = workdir / "chaos_spider.py"
        spider.write_text(textwrap.dedent(SPIDER))
        with Disk(workdir / "disk", size_mb=64) as disk:
            farm = Farm(workdir, disk.path / "items.jsonl", spider, site.url, workers)
            farm.log = workdir / "farm.log"
            farm.start_server()
            for _ in range(workers):
                farm.start_worker()
            chaos_ends = time.monotonic() + seconds
            try:
                while time.monotonic() < chaos_ends:
                    time.sleep(rng.uniform(0.5, 2.0))
                    assert farm.server is not None
                    if farm.server.poll() is not None:
                        if farm.server.returncode == 0:
                            break  # the crawl finished under fire
                        faults["server restarts after a stop"] += 1
                        farm.start_server()
                    kinds = ["kill_worker", "stop_worker", "kill_server"]
                    if disk.mounted:
                        kinds.append("disk_full")
                    kind = rng.choice(kinds)
                    live = farm.live_workers()
                    if kind == "kill_worker" and live:
                        rng.choice(live).kill()
                        farm.start_worker()
                    elif kind == "stop_worker" and live:
                        victim = rng.choice(live)
                        victim.send_signal(signal.SIGSTOP)
                        time.sleep(rng.uniform(0.2, 3.0))
                        victim.send_signal(signal.SIGCONT)
                    elif kind == "kill_server":
                        farm.server.kill()
                        farm.server.wait()
                        time.sleep(rng.uniform(0.1, 1.0))
                        farm.start_server()
                    elif kind == "disk_full":
                        disk.fill()
                        time.sleep(rng.uniform(0.5, 2.0))
                        disk.empty()
                    else:
                        continue
                    faults[kind] += 1
                    while len(farm.live_workers()) < workers:  # workers that gave up
                        farm.start_worker()
                # The end: no more faults; restart whatever a fault left stopped.
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    assert farm.server is not None
                    code = farm.server.poll()
                    if code == 0:
                        break
                    if code is not None:
                        faults["server restarts after a stop"] += 1
                        farm.start_server()
                    while len(farm.live_workers()) < workers:
                        farm.start_worker()
                    time.sleep(0.5)
                else:
                    print("the crawl did not finish within 300 s of the last fault")
                    return 1
            finally:
                farm.stop()
            return report(farm, pages, faults, seed)


def report(farm: Farm, pages: int, faults: Counter[str], seed: int) -> int:
    lines = farm.feed.read_text(encoding="utf-8").splitlines() if farm.feed.exists() else []
    items = [json.loads(line) for line in lines if line.strip()]
    seen = Counter(item["page"] for item in items)
    missing = sorted(set(range(pages)) - set(seen))
    twice = sorted(p for p, n in seen.items() if n > 1)
    bad = [item for item in items if "bad" in item]
    survived = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
    print(f"chaos seed {seed}: {pages} pages, faults survived: {survived}; "
          f"server runs {farm.server_runs}")  # fmt: skip
    print(f"feed: {len(items)} items, {len(seen)} distinct pages, {len(missing)} missing, "
          f"{len(twice)} written twice, {len(bad)} bad items")  # fmt: skip
    if missing or twice or bad or len(items) != pages:
        print(f"NOT EXACT: missing {missing[:20]} twice {twice[:20]}")
        assert farm.log is not None
        print(farm.log.read_text()[-3000:])
        return 1
    print("EXACT: every page once")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    return run(args.seed, args.seconds, args.pages, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
