"""Service-mode tests' spider: no start URLs; one item per page it is given."""

from spiderfarm import Spider


class PagesSpider(Spider):
    name = "pages"

    def __init__(self, start_url=None, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url] if start_url else []

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get("").strip()}

    def parse_author(self, response):
        yield {"author": response.css("h3.author-title::text").get("").strip()}

    def parse_follow(self, response):
        """A page and the author pages it links to: results that descend from a root."""
        yield {"url": response.url}
        yield from response.follow_all(css="div.quote span a", callback=self.parse_author)
