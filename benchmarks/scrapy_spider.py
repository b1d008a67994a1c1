"""The catalogue spider written for Scrapy, for the side-by-side benchmark (needs ``scrapy``).

Scrapy's default settings apply (16 requests in flight, 8 per domain, no delay, no
robots.txt), except the log level and the feed, which ``run.py`` passes on the command line:

    scrapy runspider benchmarks/scrapy_spider.py -a start_url=http://127.0.0.1:PORT/ \\
        -O items.jsonl -s LOG_LEVEL=WARNING
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import scrapy
from scrapy.http import Response


class CatalogueSpider(scrapy.Spider):
    name = "catalogue"
    start_url = "http://127.0.0.1:8001/"

    async def start(self) -> Any:
        yield scrapy.Request(self.start_url, callback=self.parse)

    def start_requests(self) -> Iterator[scrapy.Request]:  # Scrapy < 2.13
        yield scrapy.Request(self.start_url, callback=self.parse)

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        yield {
            "url": response.url,
            "title": response.css("h1.title::text").get(),
            "price": response.css("span.price::text").get(),
            "sku": response.css("span.sku::text").get(),
        }
        yield from response.follow_all(css="a.related", callback=self.parse)
