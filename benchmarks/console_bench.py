"""The console's cost to the crawl: the same crawl of the catalogue with no console, with
the console polled every 250 ms (as a page open on it does, plus /metrics), and with 200
concurrent requests hammering it all along. Rounds alternate the variants.

    python benchmarks/console_bench.py --pages 10000 --repeat 3

Pages/s is the verified item count over the crawl's wall clock (``crawl --workers 1``
start to exit). The pollers run in this process: on a small machine they compete for the
same cores as the crawl, which is part of what is measured (a browser would too).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.site import ServedSite  # noqa: E402
from spiderfarm.demosite import Catalogue  # noqa: E402

VARIANTS = ("none", "poll250", "hammer200")
LABELS = {
    "none": "no console (--no-console)",
    "poll250": "console polled every 250 ms",
    "hammer200": "console + 200 concurrent requests",
}
PATHS = ("api/state", "api/hosts?sort=pages", "metrics")


async def _poll(url: str, stop: threading.Event, every_s: float, counts: list[int]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            for path in PATHS:
                async with session.get(url + path) as r:
                    await r.read()
                    counts[0] += r.status == 200
            await asyncio.sleep(every_s)


async def _hammer(url: str, stop: threading.Event, clients: int, counts: list[int]) -> None:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            while not stop.is_set():
                try:
                    async with session.get(url + PATHS[i % len(PATHS)]) as r:
                        await r.read()
                        counts[0] += r.status == 200
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one(i) for i in range(clients)))


def run_once(variant: str, site_url: str, pages: int, workers: int) -> tuple[float, int, int]:
    """(pages/s, items, console requests answered) of one crawl."""
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "items.jsonl"
        argv = [
            sys.executable, "-m", "spiderfarm", "crawl", "catalogue", "--spiders-dir",
            str(ROOT / "spiders"), "-a", f"start_url={site_url}", "--workers", str(workers),
            "-O", str(feed), "-q", *(["--no-console"] if variant == "none" else []),
        ]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=tmp, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        stop, counts = threading.Event(), [0]
        thread = None
        if variant != "none":
            match = None
            for line in proc.stderr:
                match = re.search(r"console: (http://\S+?/)[ ;]", line)
                if match:
                    break
            assert match, "the crawl printed no console URL"
            url = match.group(1)
            job = (
                _poll(url, stop, 0.25, counts)
                if variant == "poll250"
                else _hammer(url, stop, 200, counts)
            )
            thread = threading.Thread(target=asyncio.run, args=(job,), daemon=True)
            thread.start()
        proc.stderr.read()
        proc.wait()
        elapsed = time.perf_counter() - started
        stop.set()
        if thread is not None:
            thread.join(10)
        items = sum(1 for _ in feed.open()) if feed.exists() else 0
        if proc.returncode != 0 or items != pages:
            print(f"  {variant}: FAILED (exit {proc.returncode}, {items} of {pages} items)")
            return 0.0, items, counts[0]
        return items / elapsed, items, counts[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    args = parser.parse_args(argv)
    # SIGTERM unwinds through the with-block below, so the site (nginx) is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    answered: dict[str, list[int]] = {v: [] for v in VARIANTS}
    with ServedSite(Catalogue(args.pages), server=args.server) as site:
        print(f"catalogue of {args.pages} pages served by {site.kind} at {site.url}")
        for round_no in range(args.repeat):
            for variant in VARIANTS:
                rate, _, count = run_once(variant, site.url, args.pages, args.workers)
                results[variant].append(rate)
                answered[variant].append(count)
                print(f"  round {round_no + 1} {LABELS[variant]:<36} {rate:8.0f} pages/s "
                      f"({count} console requests answered)", flush=True)  # fmt: skip
    base = statistics.median(results["none"])
    print(f"\nmedian of {args.repeat}, crawl --workers {args.workers}:")
    for variant in VARIANTS:
        median = statistics.median(results[variant])
        ratio = median / base if base else 0.0
        print(f"  {LABELS[variant]:<36} {median:8.0f} pages/s   ratio {ratio:.3f}   "
              f"{statistics.median(answered[variant]):.0f} requests answered")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
