"""The reference crawler: one process, aiohttp + uvloop + parsel, no framework.

A set for dedup, an asyncio queue, ``--concurrency`` tasks sharing one session, the same
extraction as ``spiders/catalogue.py`` (url, title, price, sku; follow ``a.related``) and
a same-host filter. It is the speed limit a framework on one core can approach.

    python benchmarks/bare_loop.py http://127.0.0.1:PORT/ -o items.jsonl --concurrency 32

The last line printed is JSON: ``{"pages": N, "items": N, "errors": N, "seconds": S}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urldefrag, urljoin, urlsplit

import aiohttp
import uvloop
from parsel import Selector

#: The catalogue spider's setting, so both crawl with the same number of requests in flight.
DEFAULT_CONCURRENCY = 32


async def crawl(start_url: str, concurrency: int) -> tuple[int, list[str], int]:
    """Crawl from ``start_url``; returns (pages, items as JSON lines, errors)."""
    host = urlsplit(start_url).netloc
    seen = {start_url}
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait(start_url)
    items: list[str] = []
    pages = errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def work() -> None:
            nonlocal pages, errors
            while True:
                url = await queue.get()
                try:
                    async with session.get(url) as resp:
                        text = await resp.text()
                        final_url = str(resp.url)
                    pages += 1
                    sel = Selector(text=text)
                    item = {
                        "url": final_url,
                        "title": sel.css("h1.title::text").get(),
                        "price": sel.css("span.price::text").get(),
                        "sku": sel.css("span.sku::text").get(),
                    }
                    items.append(json.dumps(item, ensure_ascii=False))
                    for href in sel.css("a.related::attr(href)").getall():
                        link = urldefrag(urljoin(final_url, href.strip()))[0]
                        if link not in seen and urlsplit(link).netloc == host:
                            seen.add(link)
                            queue.put_nowait(link)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    errors += 1
                    print(f"error: {url}: {exc!r}", file=sys.stderr)
                finally:
                    queue.task_done()

        tasks = [asyncio.create_task(work()) for _ in range(concurrency)]
        await queue.join()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return pages, items, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Crawl the catalogue with a bare asyncio loop.")
    parser.add_argument("start_url")
    parser.add_argument("-o", "--output", help="write items as JSON lines here")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        pages, items, errors = runner.run(crawl(args.start_url, args.concurrency))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write("\n".join(items))
            fh.write("\n" if items else "")
    seconds = time.perf_counter() - started
    result = {"pages": pages, "items": len(items), "errors": errors, "seconds": round(seconds, 3)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
