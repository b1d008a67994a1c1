"""A CrawlSpider as Scrapy users write one: rules and a link extractor, no Requests.

The one change from a Scrapy project is the import line.
"""

import spiderfarm as scrapy


class QuotesCrawlSpider(scrapy.spiders.CrawlSpider):
    name = "quotes_crawl"
    allowed_domains = ["127.0.0.1"]
    start_urls = ["http://127.0.0.1:8000/"]

    rules = (
        scrapy.spiders.Rule(
            scrapy.linkextractors.LinkExtractor(restrict_css="li.next"),
            callback="parse_page",
            follow=True,
        ),
        scrapy.spiders.Rule(
            scrapy.linkextractors.LinkExtractor(allow=r"/author/", deny=r"/tag/"),
            callback="parse_author",
        ),
    )

    def parse_start_url(self, response):
        return self.parse_page(response)

    def parse_page(self, response):
        for quote in response.css("div.quote"):
            yield {
                "kind": "quote",
                "text": quote.css("span.text::text").get(),
                "author": quote.css("small.author::text").get(),
                "tags": quote.css("div.tags a.tag::text").getall(),
            }

    def parse_author(self, response):
        yield {
            "kind": "author",
            "name": response.css("h3.author-title::text").get("").strip(),
            "born_date": response.css("span.author-born-date::text").get(),
            "born_location": response.css("span.author-born-location::text").get(),
            "url": response.url,
            "link_text": response.meta["link_text"],
        }
