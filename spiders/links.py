"""A generic link follower: one item per page (url, status, title), following every
link within ``allowed_domains`` (by default the start URL's host).

    python -m spiderfarm crawl links -a start_url=http://127.0.0.1:8000/ -o pages.jsonl
"""

from urllib.parse import urlsplit

from spiderfarm import Request, Spider, SpiderLoadError


class LinksSpider(Spider):
    name = "links"
    start_url = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.start_url:
            raise SpiderLoadError("spider 'links' needs a start URL: -a start_url=http://...")
        if not self.allowed_domains:
            self.allowed_domains = [urlsplit(self.start_url).hostname or ""]

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        yield {
            "url": response.url,
            "status": response.status,
            "title": (response.css("title::text").get() or "").strip(),
        }
        yield from response.follow_all(css="a::attr(href)", callback=self.parse)
