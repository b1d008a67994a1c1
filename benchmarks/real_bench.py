"""Real pages, real spider styles: spiderfarm against a bare loop and Scrapy on a real,
link-dense documentation set.

The pages are a real-world corpus set (Debian documentation packages, fetched and checked
by sha256 on first use as ``tests/corpus.py`` does): by default SQLAlchemy 1.4's manual
(``python-sqlalchemy-doc``: 224 pages, ~130 KB and ~330 ``<a href>`` each), served
``--copies`` times side by side (``/copy0/`` ... with one index page linking each copy's
start page) so that a crawl is long enough for start-up not to count, by nginx when
installed. Each variant crawls it all and must write one item (URL and ``<title>``) per
HTML page, exactly the bare loop's set, or it is reported as FAILED.

Three spider styles, each the same source for spiderfarm (``import spiderfarm as
scrapy``) and for Scrapy (``import scrapy``):

* ``all``: ``yield from response.follow_all(css="a", callback=self.parse)``
* ``link``: the per-link idiom real spiders are written with::

      for href in response.css("a::attr(href)").getall():
          url = response.urljoin(href).split("#", 1)[0]
          if urlsplit(url).netloc == self.host:
              yield response.follow(url, callback=self.parse)

* ``rule``: a ``CrawlSpider`` with ``Rule(LinkExtractor(), callback="parse_page",
  follow=True)``

Variants: ``bare`` (one process, aiohttp + uvloop + parsel, the per-link work, a set for
dedup), ``sf-STYLE-w1``/``sf-STYLE-w2`` (``crawl --workers N``), ``scrapy-STYLE``
(``scrapy runspider`` with Scrapy's default settings). spiderfarm runs with politeness
opened up as the bare loop has none (``per_host_concurrency=64``, ``autothrottle=false``,
no robots.txt), 32 requests in flight per process like the bare loop. Printed per variant
(median of ``--repeat``; Scrapy ``--scrapy-repeat``): pages/s, CPU seconds per 1,000
pages and per 100,000 links (the whole process tree), worker RSS, and ratios against the
bare loop, against ``--workers 1`` and against Scrapy. Each round runs a style's
``--workers 1`` and ``--workers 2`` back to back (see ``round_order``): the machine's speed
drifts between runs, so w2/w1 is also printed per round, each from runs under the same load.

    python benchmarks/real_bench.py                       # ~6 min with Scrapy
    python benchmarks/real_bench.py --set javadoc --copies 1 --variants bare,sf-link-w1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.site import ServedSite  # noqa: E402
from tests.corpus import CORPUS, CorpusSet, fetch  # noqa: E402

#: Heavier than the test corpus: link-dense pages of real weight, for benchmarks only.
SQLALCHEMY = CorpusSet(
    name="sqlalchemy",
    package="python-sqlalchemy-doc",
    version="1.4.46+ds1-1",
    sha256="8805c3167ef75278ac6fd58ed9856321c2b2e3a7e441edba84b2eb955216d0fd",
    doc_root="usr/share/doc/python-sqlalchemy-doc/html",
    start_page="index.html",
    generator="Sphinx (SQLAlchemy's theme)",
    pages=224,
)
SETS = {s.name: s for s in (*CORPUS, SQLALCHEMY)}

SETTINGS = ["-s", "per_host_concurrency=64", "-s", "autothrottle=false",
            "-s", "obey_robots=false", "-s", "concurrency=32"]  # fmt: skip

STYLES = {
    "all": """
{imports}

class All(scrapy.Spider):
    name = "all"
    allowed_domains = ["127.0.0.1"]

    async def start(self):
        yield scrapy.Request(self.start_url, callback=self.parse)

    def parse(self, response):
        if not isinstance(response, scrapy.http.HtmlResponse):
            return
        yield {{"url": response.url, "title": response.css("title::text").get()}}
        yield from response.follow_all(css="a", callback=self.parse)
""",
    "link": """
from urllib.parse import urlsplit

{imports}

class Link(scrapy.Spider):
    name = "link"

    async def start(self):
        self.host = urlsplit(self.start_url).netloc
        yield scrapy.Request(self.start_url, callback=self.parse)

    def parse(self, response):
        if not isinstance(response, scrapy.http.HtmlResponse):
            return
        yield {{"url": response.url, "title": response.css("title::text").get()}}
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href).split("#", 1)[0]
            if urlsplit(url).netloc == self.host:
                yield response.follow(url, callback=self.parse)
""",
    "rule": """
{imports}
from {package}.linkextractors import LinkExtractor
from {package}.spiders import CrawlSpider, Rule

class Rules(CrawlSpider):
    name = "rule"
    allowed_domains = ["127.0.0.1"]
    rules = (Rule(LinkExtractor(), callback="parse_page", follow=True),)

    async def start(self):
        yield scrapy.Request(self.start_url)

    def parse_start_url(self, response):
        return self.parse_page(response)

    def parse_page(self, response):
        if isinstance(response, scrapy.http.HtmlResponse):
            yield {{"url": response.url, "title": response.css("title::text").get()}}
""",
}


def spider_source(style: str, framework: str) -> str:
    """A style's spider, for ``spiderfarm`` or ``scrapy``: the same code either way."""
    if framework == "scrapy":
        imports, package = "import scrapy\nimport scrapy.http", "scrapy"
    else:
        imports, package = "import spiderfarm as scrapy", "spiderfarm"
    return textwrap.dedent(STYLES[style]).format(imports=imports, package=package)


BARE = """
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
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _PeakRss:
    """The peak RSS of a process's crawling part, sampled: spiderfarm's workers (the
    crawl process's children), or the process itself (the bare loop, Scrapy)."""

    def __init__(self, pid: int, children: bool) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid, children), daemon=True)
        self._thread.start()

    def _run(self, pid: int, children: bool) -> None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            while not self._stop.wait(0.2):
                with contextlib.suppress(psutil.Error):
                    procs = proc.children() if children else [proc]
                    for p in procs:
                        self.peak = max(self.peak, p.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(
    variant: str, start_url: str, tmp: Path, pythonpath: Path = ROOT
) -> tuple[float, float, set[str], int, int]:
    """(wall s, CPU s, item URLs, links seen, peak RSS of the crawling processes) of one run."""
    out = tmp / f"{variant}.jsonl"
    out.unlink(missing_ok=True)
    framework, style = (
        variant.split("-", maxsplit=1)[0],
        variant.split("-")[1] if "-" in variant else "",
    )
    if variant == "bare":
        script = tmp / "bare.py"
        script.write_text(BARE)
        argv = [sys.executable, str(script), start_url, str(out)]
    elif framework == "scrapy":
        spider = tmp / f"scrapy_{style}.py"
        spider.write_text(spider_source(style, "scrapy"))
        argv = [sys.executable, "-m", "scrapy", "runspider", str(spider), "-a",
                f"start_url={start_url}", "-O", f"{out}:jsonlines",
                "-s", "LOG_LEVEL=WARNING"]  # fmt: skip
    else:
        workers = variant.split("-w")[1]
        spider = tmp / f"{style}.py"
        spider.write_text(spider_source(style, "spiderfarm"))
        argv = [sys.executable, "-m", "spiderfarm", "crawl", str(spider), "-q", "--workers",
                workers, "-O", str(out), "-a", f"start_url={start_url}", *SETTINGS]  # fmt: skip
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            env={**os.environ, "PYTHONPATH": str(pythonpath)})  # fmt: skip
    rss = _PeakRss(proc.pid, children=framework == "sf")
    stdout, stderr = proc.communicate()
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed (rc {proc.returncode}):\n{stderr[-2000:]}")
    urls = {json.loads(line)["url"] for line in out.read_text().splitlines() if line.strip()}
    links = json.loads(stdout.strip().splitlines()[-1])["links"] if variant == "bare" else 0
    return wall, cpu, urls, links, peak


def site_tree(root: Path, corpus_set: CorpusSet, copies: int, into: Path) -> str:
    """``copies`` side-by-side copies of the set under ``into`` (symlinks), with an index
    page linking each copy's start page; returns the start path (relative to the site)."""
    if copies == 1:
        (into / "site").symlink_to(root, target_is_directory=True)
        return corpus_set.start_page
    site = into / "site"
    site.mkdir()
    links = []
    for n in range(copies):
        (site / f"copy{n}").symlink_to(root, target_is_directory=True)
        links.append(f'<li><a href="copy{n}/{corpus_set.start_page}">copy {n}</a></li>')
    (site / "index.html").write_text(
        f"<!DOCTYPE html><html><head><title>{copies} copies</title></head><body><ul>"
        + "".join(links)
        + "</ul></body></html>"
    )
    return "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="sqlalchemy", choices=sorted(SETS))
    parser.add_argument("--copies", type=int, default=4, help="side-by-side copies (default 4)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scrapy-repeat", type=int, default=1)
    default = [f"sf-{s}-w{n}" for n in (1, 2) for s in STYLES] + ["bare"]
    default += [f"scrapy-{s}" for s in STYLES]
    parser.add_argument("--variants", default=",".join(default))
    parser.add_argument(
        "--pythonpath", type=Path, default=ROOT,
        help="run spiderfarm from this checkout (an older commit, for a before figure)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    corpus_set = SETS[args.set]
    root = fetch(corpus_set)
    variants = args.variants.split(",")
    if any(v.startswith("scrapy") for v in variants):
        try:
            import scrapy  # noqa: F401
        except ImportError:
            print("Scrapy is not installed (pip install -e '.[bench]'): its variants are skipped")
            variants = [v for v in variants if not v.startswith("scrapy")]
    if "bare" in variants:  # first: its pages are what every other variant must match
        variants = ["bare", *(v for v in variants if v != "bare")]
    results: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
    expected: set[str] | None = None
    links = pages = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start_path = site_tree(root, corpus_set, args.copies, tmp)
        with ServedSite(directory=tmp / "site") as site:
            start = site.url + start_path
            print(f"{corpus_set.name}: {corpus_set.package} {corpus_set.version} "
                  f"({corpus_set.generator}) x {args.copies}, served by {site.kind} at "
                  f"{site.url}")  # fmt: skip
            rounds = max(args.repeat, args.scrapy_repeat)
            for round_ in range(rounds):
                for variant in round_order(variants, round_):
                    limit = args.scrapy_repeat if variant.startswith("scrapy") else args.repeat
                    if round_ >= limit:
                        continue
                    wall, cpu, urls, seen_links, peak = run(variant, start, tmp, args.pythonpath)
                    if variant == "bare":
                        expected, links = urls, seen_links
                    pages = len(urls)
                    if expected is not None and urls != expected:
                        print(f"  {variant}: FAILED ({len(urls)} pages, the bare loop "
                              f"{len(expected)}: {sorted(urls ^ expected)[:5]})")  # fmt: skip
                        return 1
                    results[variant].append((wall, cpu, peak))
                    print(f"  round {round_ + 1} {variant:<14} {len(urls)} pages in {wall:6.2f}s, "
                          f"CPU {cpu:6.2f}s, RSS {peak / 2**20:.0f} MiB", flush=True)  # fmt: skip
    report(results, len(expected) if expected is not None else pages, links, args)
    return 0


def round_order(variants: list[str], round_: int) -> list[str]:
    """The variants of one round: the bare loop first (its pages are the reference); then
    the rest, rotated each round, each style's ``--workers 1`` and ``--workers 2`` side by
    side (in turn first), so that each round's w2/w1 compares runs under the same load of
    a shared machine."""
    by_style: dict[str, list[str]] = {}  # "sf-all" -> its w1 and w2; others alone
    for variant in variants:
        if variant != "bare":
            by_style.setdefault(variant.rpartition("-w")[0] or variant, []).append(variant)
    groups = list(by_style.values())
    shift = round_ % max(len(groups), 1)
    groups = groups[shift:] + groups[:shift]
    order = [v for g in groups for v in (reversed(g) if round_ % 2 else g)]
    return (["bare"] if "bare" in variants else []) + order


def report(
    results: dict[str, list[tuple[float, float, int]]],
    pages: int,
    links: int,
    args: argparse.Namespace,
) -> None:
    print(f"\n{pages} pages, {links:,} links ({links / max(pages, 1):.0f} per page); median of "
          f"{args.repeat} (Scrapy {args.scrapy_repeat}):")  # fmt: skip
    med = {
        v: (statistics.median(w for w, _, _ in r), statistics.median(c for _, c, _ in r),
            max(p for _, _, p in r))
        for v, r in results.items() if r
    }  # fmt: skip
    bare = med.get("bare")
    print(f"{'variant':<15}{'pages/s':>8}{'CPU ms/page':>12}{'CPU s/100k links':>17}"
          f"{'RSS MiB':>8}{'vs bare':>8}{'per round':>10}{'CPU vs bare':>12}"
          f"{'vs scrapy':>10}")  # fmt: skip
    for variant, (wall, cpu, peak) in med.items():
        style = variant.split("-")[1] if "-" in variant else ""
        scrapy = med.get(f"scrapy-{style}")
        vs = f"{bare[0] / wall:.2f}" if bare else "-"
        # against the bare loop of the same round (run at its start): less of the drift
        rounds = zip(results.get("bare", []), results[variant], strict=False)  # Scrapy: fewer
        paired = [b[0] / r[0] for b, r in rounds]
        vs_round = f"{statistics.median(paired):.2f}" if bare and variant != "bare" else "-"
        cpu_vs = f"{bare[1] / cpu:.2f}" if bare else "-"
        vs_scrapy = f"{scrapy[0] / wall:.2f}" if scrapy and variant.startswith("sf") else "-"
        per_links = f"{cpu / links * 1e5:.2f}" if links else "-"  # links: the bare loop counts
        print(f"{variant:<15}{pages / wall:>8.0f}{cpu / max(pages, 1) * 1000:>12.2f}"
              f"{per_links:>17}{peak / 2**20:>8.0f}{vs:>8}{vs_round:>10}{cpu_vs:>12}"
              f"{vs_scrapy:>10}")  # fmt: skip
    for style in STYLES:
        one, two = med.get(f"sf-{style}-w1"), med.get(f"sf-{style}-w2")
        if one and two:
            pairs = zip(results[f"sf-{style}-w1"], results[f"sf-{style}-w2"], strict=False)
            rounds = [w1 / w2 for (w1, _, _), (w2, _, _) in pairs]
            print(f"sf-{style}: --workers 2 / --workers 1 = {one[0] / two[0]:.2f} (medians); "
                  f"per round: {', '.join(f'{r:.2f}' for r in rounds)} "
                  f"(median {statistics.median(rounds):.2f})")  # fmt: skip
    print("(vs bare, vs scrapy: speed ratios of the medians, >1 is faster; per round: the "
          "median of each round's ratio to that round's bare loop; CPU vs bare: >1 is "
          "cheaper; RSS: spiderfarm's largest worker, else the process)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
