"""Quotes and their authors from the "quotes to scrape" sandbox.

Serve the bundled copy, then crawl it:
    python -m http.server 8000 --bind 127.0.0.1 --directory ../shared/sites/quotes &
    python -m spiderfarm crawl quotes -o quotes.jsonl
Another address: -a start_url=http://127.0.0.1:9000/
"""

from spiderfarm import Request, Spider


class QuotesSpider(Spider):
    name = "quotes"
    start_url = "http://127.0.0.1:8000/"

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        for quote in response.css("div.quote"):
            yield {
                "type": "quote",
                "text": quote.css("span.text::text").get(),
                "author": quote.css("small.author::text").get(),
                "tags": quote.css("a.tag::text").getall(),
            }
        # Every author link: the frontier dedups the 100 links down to 50 author pages.
        yield from response.follow_all(css="div.quote span a", callback=self.parse_author)
        yield from response.follow_all(css="li.next a", callback=self.parse)

    def parse_author(self, response):
        yield {
            "type": "author",
            "name": response.css("h3.author-title::text").get("").strip(),
            "born_date": response.css("span.author-born-date::text").get(),
            "born_location": response.css("span.author-born-location::text").get(),
        }
