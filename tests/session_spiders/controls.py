"""Each meta control on the test site (tests/sites.py): ``-a base=URL``."""

from spiderfarm import Request, Spider


class ControlsSpider(Spider):
    name = "controls"
    base = "http://127.0.0.1:8000"
    custom_settings = {  # noqa: RUF012 (Scrapy's idiom)
        "retry_backoff_s": 0.01, "max_retries": 2, "autothrottle": False,
    }

    def start_requests(self):
        b = self.base
        to_c = "/redirect-to?url=%2Fpage%2Fc"
        yield Request(b + to_c, meta={"k": "a"})
        yield Request(b + to_c + "&from=b", meta={"k": "b"})
        # Redirects to a page the crawl also has as a start request of its own.
        yield Request(b + "/page/d")
        yield Request(b + "/redirect-to?url=%2Fpage%2Fd", meta={"k": "to-d"})
        # dont_filter: its redirect target is not deduplicated.
        yield Request(
            b + "/redirect-to?url=%2Fpage%2Fc&from=df", meta={"k": "df"}, dont_filter=True
        )
        yield Request(b + "/redirect/2", meta={"k": "chain"})
        yield Request(b + "/redirect/1?no=1", meta={"k": "noredirect", "dont_redirect": True},
                      errback=self.failed)
        yield Request(
            b + "/redirect/1?keep=1", meta={"k": "kept301", "handle_httpstatus_list": [302]}
        )
        yield Request(b + "/status/404", meta={"k": "all", "handle_httpstatus_all": True})
        yield Request(b + "/status/410", meta={"k": "list", "handle_httpstatus_list": [410]})
        yield Request(b + "/status/418", meta={"k": "unhandled"}, errback=self.failed)
        yield Request(b + "/flaky/dr?fail=1", meta={"k": "dont_retry", "dont_retry": True},
                      errback=self.failed)
        yield Request(b + "/flaky/m0?fail=1", meta={"k": "max0", "max_retry_times": 0},
                      errback=self.failed)
        yield Request(b + "/flaky/m3?fail=3", meta={"k": "max3", "max_retry_times": 3})
        yield Request(b + "/flaky/plain?fail=1", meta={"k": "plain"})
        # On a host of its own: timeouts back a host off, and would slow the others.
        local = b.replace("127.0.0.1", "localhost")
        yield Request(local + "/delay/2", meta={"k": "timeout", "download_timeout": 0.3},
                      errback=self.failed)

    def parse(self, response):
        meta = response.meta
        yield {
            "k": meta.get("k"),
            "url": response.url,
            "status": response.status,
            "redirect_urls": meta.get("redirect_urls"),
            "redirect_reasons": meta.get("redirect_reasons"),
            "redirect_times": meta.get("redirect_times"),
        }

    def failed(self, failure):
        yield {"k": failure.request.meta.get("k"), "failed": failure.reason}
