"""Real pages, real spider styles: spiderfarm against a bare loop on a real documentation set.

The pages are a real-world corpus set (``tests/corpus.py``: Debian documentation packages,
fetched and checked by sha256 on first use), served on 127.0.0.1 by nginx when installed.
Each variant crawls the whole set from its start page and must write one item (URL and
``<title>``) per HTML page, exactly the bare loop's set, or it is reported as FAILED:

* ``sf-all-w1``/``sf-all-w2``: ``crawl --workers N`` with ``response.follow_all(css="a")``
* ``sf-link-w1``/``sf-link-w2``: the per-link idiom real spiders are written with::

      for href in response.css("a::attr(href)").getall():
          url = response.urljoin(href).split("#", 1)[0]
          if urlsplit(url).netloc == self.host:
              yield response.follow(url, callback=self.parse)

* ``bare``: one process, aiohttp + uvloop + parsel, the same per-link work, a set for dedup.

spiderfarm runs with politeness opened up as the bare loop has none
(``per_host_concurrency=64``, ``autothrottle=false``, no robots.txt), 32 requests in
flight per process like the bare loop. Printed per variant (median of ``--repeat``):
pages/s, CPU seconds per 1,000 pages and per 100,000 links (the whole process tree), and
ratios against the bare loop and against ``--workers 1``.

    python benchmarks/real_bench.py [--set javadoc] [--repeat 3] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.site import ServedSite  # noqa: E402
from tests.corpus import CORPUS, fetch  # noqa: E402

SETTINGS = ["-s", "per_host_concurrency=64", "-s", "autothrottle=false",
            "-s", "obey_robots=false", "-s", "concurrency=32"]  # fmt: skip

SPIDERS = {
    "all": '''
from spiderfarm import HtmlResponse, Spider


class All(Spider):
    name = "all"
    allowed_domains = ("127.0.0.1",)

    def parse(self, response):
        if not isinstance(response, HtmlResponse):
            return
        yield {"url": response.url, "title": response.css("title::text").get()}
        yield from response.follow_all(css="a", callback=self.parse)
''',
    "link": '''
from urllib.parse import urlsplit

from spiderfarm import HtmlResponse, Request, Spider


class Link(Spider):
    name = "link"
    start_url = ""

    def start_requests(self):
        self.host = urlsplit(self.start_url).netloc
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        if not isinstance(response, HtmlResponse):
            return
        yield {"url": response.url, "title": response.css("title::text").get()}
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href).split("#", 1)[0]
            if urlsplit(url).netloc == self.host:
                yield response.follow(url, callback=self.parse)
''',
}

BARE = '''
import asyncio, json, sys
from urllib.parse import urljoin, urlsplit

import aiohttp, uvloop
from parsel import Selector


async def crawl(start, out):
    host = urlsplit(start).netloc
    seen, queue, items = {start}, asyncio.Queue(), []
    links = 0
    queue.put_nowait(start)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        async def work():
            nonlocal links
            while True:
                url = await queue.get()
                try:
                    async with session.get(url) as resp:
                        body = await resp.read()
                        final, ctype = str(resp.url), resp.headers.get("Content-Type", "")
                    if resp.status != 200 or not ctype.startswith("text/html"):
                        continue
                    sel = Selector(text=body.decode(resp.charset or "utf-8", "replace"))
                    items.append(json.dumps({"url": final, "title": sel.css("title::text").get()}))
                    for href in sel.css("a::attr(href)").getall():
                        links += 1
                        link = urljoin(final, href.strip()).split("#", 1)[0]
                        if urlsplit(link).netloc == host and link not in seen:
                            seen.add(link)
                            queue.put_nowait(link)
                except (aiohttp.ClientError, ValueError) as exc:
                    print(f"error {url}: {exc!r}", file=sys.stderr)
                finally:
                    queue.task_done()

        tasks = [asyncio.create_task(work()) for _ in range(32)]
        await queue.join()
        for task in tasks:
            task.cancel()
    with open(out, "w") as fh:
        fh.write("\\n".join(items) + "\\n")
    print(json.dumps({"links": links}))


with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(crawl(sys.argv[1], sys.argv[2]))
'''


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(variant: str, start_url: str, tmp: Path) -> tuple[float, float, set[str], int]:
    """(wall s, CPU s, item URLs, links seen) of one run."""
    out = tmp / f"{variant}.jsonl"
    out.unlink(missing_ok=True)
    if variant == "bare":
        script = tmp / "bare.py"
        script.write_text(BARE)
        argv = [sys.executable, str(script), start_url, str(out)]
    else:
        style, workers = variant.split("-")[1], variant.split("-w")[1]
        spider = tmp / f"{style}.py"
        spider.write_text(textwrap.dedent(SPIDERS[style]))
        argv = [sys.executable, "-m", "spiderfarm", "crawl", str(spider), "-q", "--workers",
                workers, "-O", str(out), "-a", f"start_urls={start_url}",
                "-a", f"start_url={start_url}", *SETTINGS]  # fmt: skip
    cpu0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
    urls = {json.loads(line)["url"] for line in out.read_text().splitlines() if line.strip()}
    links = json.loads(done.stdout.strip().splitlines()[-1])["links"] if variant == "bare" else 0
    return wall, cpu, urls, links


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="javadoc", choices=[s.name for s in CORPUS])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default="bare,sf-all-w1,sf-link-w1,sf-all-w2,sf-link-w2")
    args = parser.parse_args(argv)
    corpus_set = next(s for s in CORPUS if s.name == args.set)
    root = fetch(corpus_set)
    variants = args.variants.split(",")
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    expected: set[str] | None = None
    links = 0
    with ServedSite(directory=root) as site, tempfile.TemporaryDirectory() as tmp:
        start = site.url + corpus_set.start_page
        print(f"{corpus_set.name}: {corpus_set.package} {corpus_set.version} "
              f"({corpus_set.generator}), served by {site.kind} at {site.url}")  # fmt: skip
        for round_ in range(args.repeat):
            for variant in variants[round_ % len(variants):] + variants[: round_ % len(variants)]:
                wall, cpu, urls, seen_links = run(variant, start, Path(tmp))
                if variant == "bare":
                    expected, links = urls, seen_links
                if expected is not None and urls != expected:
                    print(f"  {variant}: FAILED ({len(urls)} pages, the bare loop {len(expected)})")
                    return 1
                results[variant].append((wall, cpu))
                print(f"  round {round_ + 1} {variant:<11} {len(urls)} pages in {wall:.2f}s, "
                      f"CPU {cpu:.2f}s", flush=True)  # fmt: skip
    pages = len(expected or ())
    print(f"\n{pages} pages, {links:,} links ({links / max(pages, 1):.0f} per page); median of "
          f"{args.repeat}:")  # fmt: skip
    print(f"{'variant':<12}{'pages/s':>9}{'CPU s/1k pages':>16}{'CPU s/100k links':>18}"
          f"{'vs bare':>9}{'CPU vs bare':>13}")  # fmt: skip
    med = {v: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
           for v, r in results.items() if r}  # fmt: skip
    bare = med.get("bare")
    for variant, (wall, cpu) in med.items():
        rate = pages / wall
        vs = f"{(bare[0] / wall):.2f}" if bare else "-"
        cpu_vs = f"{(bare[1] / cpu):.2f}" if bare else "-"
        print(f"{variant:<12}{rate:>9.0f}{cpu / pages * 1000:>16.2f}"
              f"{cpu / max(links, 1) * 1e5:>18.2f}{vs:>9}{cpu_vs:>13}")  # fmt: skip
    for style in ("all", "link"):
        one, two = med.get(f"sf-{style}-w1"), med.get(f"sf-{style}-w2")
        if one and two:
            print(f"sf-{style}: --workers 2 / --workers 1 = {one[0] / two[0]:.2f}")
    print("(vs bare: speed ratio, >1 is faster than the bare loop; CPU vs bare: >1 is cheaper)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
