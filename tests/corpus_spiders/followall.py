"""A generic follow-all spider for the corpus tests: one item per HTML page (its URL and
``<title>``), following every ``<a href>`` on 127.0.0.1.

    python -m spiderfarm crawl followall --spiders-dir tests/corpus_spiders \\
        -a start_urls=http://127.0.0.1:PORT/index.html -o pages.jsonl
"""

from spiderfarm import Spider


class FollowAllSpider(Spider):
    name = "followall"
    allowed_domains = ("127.0.0.1",)

    def parse(self, response):
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "text/html":
            return  # an image or a text file a page links to: fetched, not a page
        yield {"url": response.url, "title": response.css("title::text").get()}
        yield from response.follow_all(css="a", callback=self.parse)
