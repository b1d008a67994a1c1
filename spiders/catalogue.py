"""The demo spider: crawls the bundled product catalogue (``python -m spiderfarm demo``).

Run it yourself against the demo site:
    python -m spiderfarm.demosite --port 8001 &
    python -m spiderfarm crawl catalogue -a start_url=http://127.0.0.1:8001/ -o products.jsonl
"""

from spiderfarm import Request, Spider


class CatalogueSpider(Spider):
    name = "catalogue"
    # The demo site is ours and local: crawl it as fast as the farm can.
    custom_settings = {"per_host_concurrency": 128, "concurrency": 32, "autothrottle": False}
    start_url = "http://127.0.0.1:8001/"

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        yield {
            "url": response.url,
            "title": response.css("h1.title::text").get(),
            "price": response.css("span.price::text").get(),
            "sku": response.css("span.sku::text").get(),
        }
        yield from response.follow_all(css="a.related", callback=self.parse)
