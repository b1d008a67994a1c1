"""Scrapy's tutorial spider, as Scrapy users write it: start_urls and parse only.

The one change from a Scrapy project is the import line.
"""

import spiderfarm as scrapy


class QuotesSpider(scrapy.Spider):
    name = "quotes_tutorial"
    start_urls = ["http://127.0.0.1:8000/page/1/"]

    def parse(self, response):
        for quote in response.css("div.quote"):
            yield {
                "text": quote.css("span.text::text").get(),
                "author": quote.css("small.author::text").get(),
                "tags": quote.css("div.tags a.tag::text").getall(),
            }

        next_page = response.css("li.next a::attr(href)").get()
        if next_page is not None:
            next_page = response.urljoin(next_page)
            yield scrapy.Request(next_page, callback=self.parse)
