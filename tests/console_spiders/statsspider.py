"""The demo catalogue, crawled by a spider that counts with ``self.stats`` in its callback
and in an item pipeline (tests/test_console.py)."""

import os

from spiderfarm import Request, Spider


class CountingPipeline:
    def process_item(self, item, spider):
        spider.stats.inc_value("pipeline/items")
        return item


class StatsSpider(Spider):
    name = "statsspider"
    custom_settings = {
        "concurrency": 2,  # small leases, so that both workers get pages
        "autothrottle": False,
        "per_host_concurrency": 4,
    }
    item_pipelines = [CountingPipeline]
    start_url = "http://127.0.0.1:8001/"

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        price = float(response.css("span.price::text").re_first(r"[\d.]+") or 0)
        stats = self.stats
        stats.inc_value("pages_seen")
        stats.inc_value(f"pages_by_pid/{os.getpid()}")
        stats.inc_value("from_100", 1, start=100)
        stats.max_value("price_max", price)
        stats.min_value("price_min", price)
        stats.set_value("constant", 7)
        yield {"url": response.url, "price": price}
        yield from response.follow_all(css="a.related", callback=self.parse)
