"""A start() that never ends: only a frontier that pulls start requests can crawl it."""

import itertools

import spiderfarm as scrapy


class EndlessSpider(scrapy.Spider):
    name = "endless"
    start_url = "http://127.0.0.1:8000/"
    custom_settings = {"max_pages": 30, "obey_robots": False}

    async def start(self):
        for i in itertools.count():
            yield scrapy.Request(f"{self.start_url}page/p{i}", callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
