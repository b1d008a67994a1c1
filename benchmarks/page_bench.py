"""Per-page CPU cost of the worker's callback path, against the bare loop's, step by step.

No network: pages are rendered in memory from the catalogue, so the figures (CPU
microseconds per page, best of ``--rounds``) hold steady even on a busy machine. This is
where the crawl's CPU goes once fetching is equal; ``run.py`` measures the whole thing.

    python benchmarks/page_bench.py --pages 2000

Steps measured for spiderfarm use its own code (``Response``, the catalogue spider,
``Worker._run_callback`` with its link dedup and item encoding, pickling of the outcome);
the bare steps are those of ``bare_loop.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from parsel import Selector

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spiderfarm.demosite import Catalogue  # noqa: E402
from spiderfarm.http import Request, Response, response_for  # noqa: E402
from spiderfarm.items import encode_item  # noqa: E402
from spiderfarm.worker import Crawl, Links, PageResult, PageRunner  # noqa: E402

BASE = "http://127.0.0.1:8001"
HEADERS = {"Content-Type": "text/html; charset=utf-8"}


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-page CPU cost, spiderfarm vs bare loop.")
    parser.add_argument("--pages", type=int, default=2000, help="pages to process per round")
    parser.add_argument("--site-pages", type=int, default=20_000, help="catalogue size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    catalogue = Catalogue(pages=args.site_pages)
    # Spread the sample over the site so links repeat as often as in a crawl's middle.
    step = max(1, args.site_pages // args.pages)
    indices = list(range(0, args.site_pages, step))[: args.pages]
    pages = [(BASE + catalogue.path(i), catalogue.render(i)) for i in indices]
    n = len(pages)
    requests = [Request(url, callback="parse") for url, _ in pages]

    def responses() -> list[Response]:
        return [
            response_for(url, 200, HEADERS, body, req)
            for (url, body), req in zip(pages, requests, strict=True)
        ]

    results: list[tuple[str, float]] = []

    def measure(label: str, fn: Callable[[], object]) -> None:
        us = _best(fn, args.rounds) / n * 1e6
        results.append((label, us))
        print(f"  {label:<62}{us:>9.1f} us/page", flush=True)

    # -- the bare loop's steps -------------------------------------------------------------
    print(f"{n} catalogue pages of ~{catalogue.page_bytes} B; CPU time per page, best of "
          f"{args.rounds}:")  # fmt: skip
    print("bare loop (benchmarks/bare_loop.py):")
    texts = [body.decode("utf-8") for _, body in pages]
    measure("decode body", lambda: [body.decode("utf-8") for _, body in pages])
    measure("Selector(text=...) (lxml parse)", lambda: [Selector(text=t) for t in texts])
    sels = [Selector(text=t) for t in texts]

    def bare_fields() -> None:
        for (url, _), sel in zip(pages, sels, strict=True):
            item = {
                "url": url,
                "title": sel.css("h1.title::text").get(),
                "price": sel.css("span.price::text").get(),
                "sku": sel.css("span.sku::text").get(),
            }
            json.dumps(item, ensure_ascii=False)

    measure("3 fields + json.dumps", bare_fields)

    def bare_links() -> None:
        seen: set[str] = set()
        host = urlsplit(BASE).netloc
        for (url, _), sel in zip(pages, sels, strict=True):
            for href in sel.css("a.related::attr(href)").getall():
                link = urldefrag(urljoin(url, href.strip()))[0]
                if link not in seen and urlsplit(link).netloc == host:
                    seen.add(link)

    measure("20 links: css + urljoin + same-host + set dedup", bare_links)

    def bare_all() -> None:
        seen: set[str] = set()
        host = urlsplit(BASE).netloc
        for url, body in pages:
            sel = Selector(text=body.decode("utf-8"))
            item = {
                "url": url,
                "title": sel.css("h1.title::text").get(),
                "price": sel.css("span.price::text").get(),
                "sku": sel.css("span.sku::text").get(),
            }
            json.dumps(item, ensure_ascii=False)
            for href in sel.css("a.related::attr(href)").getall():
                link = urldefrag(urljoin(url, href.strip()))[0]
                if link not in seen and urlsplit(link).netloc == host:
                    seen.add(link)

    measure("TOTAL bare extraction", bare_all)
    bare_total = results[-1][1]

    # -- spiderfarm's steps ----------------------------------------------------------------
    print("spiderfarm worker (its own code):")
    measure("Response.text (w3lib html_to_unicode)", lambda: [r.text for r in responses()])
    rs = responses()
    for r in rs:
        _ = r.text
    measure("Response.selector (lxml parse)", lambda: [Selector(text=r.text) for r in rs])
    for r in rs:
        _ = r.selector

    def sf_fields() -> None:
        for r in rs:
            item = {
                "url": r.url,
                "title": r.css("h1.title::text").get(),
                "price": r.css("span.price::text").get(),
                "sku": r.css("span.sku::text").get(),
            }
            encode_item(item)

    measure("3 fields + encode_item", sf_fields)
    measure(
        "follow_all(css='a.related'): 20 Requests",
        lambda: [list(r.follow_all(css="a.related", callback="parse")) for r in rs],
    )
    followed = [list(r.follow_all(css="a.related", callback="parse")) for r in rs]

    crawl = Crawl.offline(
        "catalogue", spiders_dir=ROOT / "spiders", spider_args={"start_url": BASE + "/"}
    )

    def collect_links() -> None:
        # The package's own per-link path: exact-URL repeat drop, fingerprint, local
        # dedup, politeness key, to_wire (Links.add, as the page runner calls it).
        links = Links(crawl.settings, crawl.spider.name)
        for r, reqs in zip(rs, followed, strict=True):
            result = PageResult()
            for req in reqs:
                links.add(req, r.request, result)

    measure("links to wire: Links.add (dedup, fingerprint, to_wire)", collect_links)

    async def run_callbacks() -> list[Any]:
        fresh = PageRunner(crawl.spider, crawl.settings, None, Links(crawl.settings))
        outcomes = []
        for r in responses():
            res = await fresh.run_callback(r.request, r, "parse")
            notes = ",".join(res.notes)
            if "error" in notes or "bad_item" in notes:
                raise SystemExit(f"callback failed on {r.url}: {notes} (see the log above)")
            outcomes.append((1, "ok", notes, res.requests, res.items, (200, 0.0, 0.0)))
        return outcomes

    def sf_all() -> None:
        asyncio.run(run_callbacks())

    measure("TOTAL PageRunner.run_callback (parse + collect)", sf_all)
    sf_total = results[-1][1]
    outcomes = asyncio.run(run_callbacks())
    links = sum(len(o[3]) for o in outcomes)
    measure(
        f"pickle the outcomes in batches of 8 ({links / n:.1f} new links/page sent)",
        lambda: [pickle.dumps(outcomes[i : i + 8], 2) for i in range(0, n, 8)],
    )
    blobs = [pickle.dumps(outcomes[i : i + 8], 2) for i in range(0, n, 8)]
    measure("unpickle them (server side)", lambda: [pickle.loads(b) for b in blobs])

    print()
    print(f"callback path per page: spiderfarm {sf_total:.0f} us, bare {bare_total:.0f} us, "
          f"ratio {sf_total / bare_total:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
