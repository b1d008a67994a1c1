"""A Scrapy-style spider (``import spiderfarm as scrapy``): state set in
``start_requests()`` and read in every callback, the per-link ``response.follow`` loop
real spiders are written with, and an ``isinstance`` test on the response kind."""

from urllib.parse import urlsplit

import spiderfarm as scrapy


class StatefulSpider(scrapy.Spider):
    name = "stateful"
    start_url = ""

    def start_requests(self):
        self.host = urlsplit(self.start_url).netloc  # read in parse, on the workers
        self.pages_seen = 0
        yield scrapy.Request(self.start_url, callback=self.parse)

    def parse(self, response):
        if not isinstance(response, scrapy.http.HtmlResponse):
            return  # an image or a text file a page links to: fetched, not a page
        self.pages_seen += 1  # per worker: callbacks' changes stay where they are made
        yield {
            "url": response.url,
            "title": response.css("title::text").get(),
            "host": self.host,
        }
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href).split("#", 1)[0]
            if urlsplit(url).netloc == self.host:
                yield response.follow(url, callback=self.parse)
