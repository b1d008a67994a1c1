"""A 1,000,000-URL start: time to the first item and the server's memory.

A spider whose ``start_requests()`` yields a million URLs (as one reading a file or a
database cursor would) is crawled with ``crawl --workers 1 -s max_pages=N`` against the
demo catalogue on 127.0.0.1. Printed per variant: seconds from the command's start to the
first item in the feed, to the end, and the server's (the ``crawl`` process's) peak RSS.

Variants:

* ``generator``: ``start_requests()`` is a generator (streamed: read as the queue runs low)
* ``async``: ``async def start()``, an async generator (streamed the same way)
* ``list``: ``start_requests()`` returns a list of a million Requests (built up front by
  the spider, as any framework must then hold it)

``--pythonpath DIR`` runs the same against another checkout (an older commit, say), for
a before/after figure::

    python benchmarks/start_bench.py
    git worktree add /tmp/old COMMIT && python benchmarks/start_bench.py --pythonpath /tmp/old \\
        --variants generator,list
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.site import ServedSite  # noqa: E402
from spiderfarm.demosite import Catalogue  # noqa: E402

SPIDERS = {
    "generator": """
def start_requests(self):
    for n in range(self.urls):
        yield Request(f"{self.base}?n={n}", callback=self.parse)
""",
    "async": """
async def start(self):
    for n in range(self.urls):
        yield Request(f"{self.base}?n={n}", callback=self.parse)
""",
    "list": """
def start_requests(self):
    return [Request(f"{self.base}?n={n}", callback=self.parse) for n in range(self.urls)]
""",
}

TEMPLATE = """
from spiderfarm import Request, Spider


class Million(Spider):
    name = "million"
    base = "http://127.0.0.1:8001/"
    urls = 1_000_000
    custom_settings = {{"obey_robots": False, "autothrottle": False,
                        "per_host_concurrency": 64, "concurrency": 32}}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.urls = int(self.urls)

{method}

    def parse(self, response):
        yield {{"url": response.url, "title": response.css("h1.title::text").get()}}
"""


def run(variant: str, base: str, urls: int, pages: int, pythonpath: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        spider = Path(tmp) / "million.py"
        method = "\n".join("    " + line for line in SPIDERS[variant].strip().splitlines())
        spider.write_text(TEMPLATE.format(method=method))
        feed = Path(tmp) / "items.jsonl"
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        argv = [
            sys.executable, "-m", "spiderfarm", "crawl", str(spider), "--workers", "1", "-q",
            "-o", str(feed), "-a", f"base={base}", "-a", f"urls={urls}",
            "-s", f"max_pages={pages}",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=pythonpath or ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        server = psutil.Process(proc.pid)
        peak, first = 0, 0.0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, server.memory_info().rss)
            if not first and feed.exists() and feed.stat().st_size:
                first = time.monotonic() - started
            time.sleep(0.02)
        total = time.monotonic() - started
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{variant}: rc {proc.returncode}\n{err.decode()[-2000:]}")
        lines = sum(1 for _ in feed.open()) if feed.exists() else 0
        summary = out.decode().strip().splitlines()[0] if out else ""
        return {
            "first_item_s": first or total,
            "total_s": total,
            "peak_rss_mb": peak / 2**20,
            "items": lines,
            "summary": summary,  # type: ignore[dict-item]
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=2_000, help="max_pages of each crawl")
    parser.add_argument("--variants", default="generator,async,list")
    parser.add_argument("--pythonpath", help="run another checkout of spiderfarm")
    args = parser.parse_args(argv)
    with ServedSite(Catalogue(pages=10), server="python") as site:
        base = site.url
        print(f"{args.urls:,} start URLs, max_pages={args.pages:,}, site {base}")
        if args.pythonpath:
            print(f"spiderfarm from {args.pythonpath}")
        header = f"{'variant':<10} {'first item s':>12} {'total s':>8} {'server peak RSS MB':>19}"
        print(header + "  items")
        results = {}
        for variant in args.variants.split(","):
            r = run(variant, base, args.urls, args.pages, args.pythonpath)
            results[variant] = r
            print(
                f"{variant:<10} {r['first_item_s']:>12.2f} {r['total_s']:>8.2f} "
                f"{r['peak_rss_mb']:>19.1f}  {r['items']:,}   {r['summary']}"
            )
        if "generator" in results and "list" in results:
            g, li = results["generator"], results["list"]
            print(
                f"list / generator: first item {li['first_item_s'] / g['first_item_s']:.1f}x "
                f"later, peak RSS {li['peak_rss_mb'] / g['peak_rss_mb']:.1f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
