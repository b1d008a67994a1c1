"""State set in start_requests() and read in callbacks: an everyday Scrapy idiom."""

from urllib.parse import urlsplit

import spiderfarm as scrapy


class QuotesStateSpider(scrapy.Spider):
    name = "quotes_state"
    start_url = "http://127.0.0.1:8000/"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_tags = {"from-init"}  # set in __init__: every worker's own __init__ sets it

    def start_requests(self):
        parts = urlsplit(self.start_url)
        self.host = parts.netloc  # set while starting, on the server only
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.limits = {"max_tags": 3}
        yield scrapy.Request(self.start_url, callback=self.parse)

    def parse(self, response):
        for quote in response.css("div.quote"):
            yield {
                "host": self.host,
                "text": quote.css("span.text::text").get(),
                "tags": quote.css("a.tag::text").getall()[: self.limits["max_tags"]],
                "init": sorted(self.seen_tags),
            }
        for href in response.css("li.next a::attr(href)").getall():
            url = response.urljoin(href)
            if urlsplit(url).netloc == self.host:
                yield response.follow(url, callback=self.parse)
