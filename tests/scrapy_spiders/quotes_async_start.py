"""Scrapy 2.13+'s async def start(), with state, meta and cb_kwargs."""

import spiderfarm as scrapy


class QuotesAsyncSpider(scrapy.Spider):
    name = "quotes_async"
    start_url = "http://127.0.0.1:8000/"

    async def start(self):
        self.prefix = self.start_url.rstrip("/")
        yield {"kind": "start", "site": self.prefix}  # start() may yield items too
        yield scrapy.Request(self.start_url, callback=self.parse, meta={"page": 1})

    def parse(self, response):
        page = response.meta["page"]
        for quote in response.css("div.quote"):
            author_href = quote.css("span a::attr(href)").get()
            yield response.follow(
                author_href,
                callback=self.parse_author,
                cb_kwargs={"quoted_on": page},
            )
        next_page = response.css("li.next a::attr(href)").get()
        if next_page:
            yield response.follow(next_page, callback=self.parse, meta={"page": page + 1})

    def parse_author(self, response, quoted_on):
        yield {
            "kind": "author",
            "name": response.css("h3.author-title::text").get("").strip(),
            "first_quoted_on_page": quoted_on,
            "url": response.url,
            "under": response.url.startswith(self.prefix),
        }
