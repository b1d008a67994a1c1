"""A Scrapy 2.13+ spider: ``async def start()``, state set there, ``meta`` and
``cb_kwargs`` along the way, ``response.follow_all`` over selectors."""

import spiderfarm as scrapy


class AsyncStartSpider(scrapy.Spider):
    name = "asyncstart"
    start_url = ""
    allowed_domains = ("127.0.0.1",)

    async def start(self):
        self.root = self.start_url.rsplit("/", 1)[0] + "/"
        yield scrapy.Request(self.start_url, meta={"depth_seen": 0}, cb_kwargs={"via": None})

    def parse(self, response, via):
        if not isinstance(response, scrapy.http.HtmlResponse):
            return
        depth = response.meta["depth_seen"]
        yield {
            "url": response.url,
            "title": response.css("title::text").get(),
            "under_root": response.url.startswith(self.root),
            "via": via,
        }
        yield from response.follow_all(
            response.css("a"),
            callback=self.parse,
            meta={"depth_seen": depth + 1},
            cb_kwargs={"via": response.url},
        )
