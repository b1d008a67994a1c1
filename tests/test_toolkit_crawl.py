"""``CrawlSpider`` and ``Rule`` (issue 13): Scrapy's rule order, follow defaults and
hooks, run on real responses, and a Scrapy-idiom CrawlSpider (``import spiderfarm as
scrapy``, rules alone) crawling the quotes site on a farm of two workers."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

import spiderfarm as scrapy
from spiderfarm import FetchError, HtmlResponse, Request, Response, SpiderLoadError
from spiderfarm.link import Link
from spiderfarm.linkextractors import LinkExtractor
from spiderfarm.spiders import CrawlSpider, Rule, Spider
from spiderfarm.start import spider_state
from tests.farm import read_items, run_cli

pytestmark = pytest.mark.timeout(180)

SCRAPY_SPIDERS = Path(__file__).parent / "scrapy_spiders"
URL = "http://shop.test/"

HOME = b"""<html><body>
<a href="/category/1">Cat 1</a> <a href="/category/2">Cat 2</a>
<a href="/item/1">Item 1</a> <a href="/item/2">Item 2</a> <a href="/about">About</a>
</body></html>"""


def html(body: bytes = HOME, url: str = URL, request: Request | None = None) -> HtmlResponse:
    return HtmlResponse(url, 200, {"Content-Type": "text/html"}, body, request or Request(url))


def followed(request: Request, body: bytes = HOME) -> HtmlResponse:
    """The response to a request a rule made, as a worker would give it."""
    return html(body, url=request.url, request=Request.from_wire(request.to_wire()))


async def collect(output: Any) -> list[Any]:
    if inspect.isasyncgen(output):
        return [value async for value in output]
    if inspect.isawaitable(output):
        output = await output
    return list(output or ())


def requests_in(values: Iterable[Any]) -> list[Request]:
    return [v for v in values if isinstance(v, Request)]


class ShopSpider(CrawlSpider):
    name = "shop"
    start_urls = (URL,)
    rules = (
        Rule(LinkExtractor(allow=r"/category/"), process_links="first_only"),
        Rule(LinkExtractor(allow=r"/(item|category)/"), callback="parse_item",
             cb_kwargs={"source": "rule"}),
        Rule(LinkExtractor(allow=r"/about"), callback=lambda response: [{"about": response.url}],
             follow=True, process_request="tag"),
    )  # fmt: skip

    def first_only(self, links: list[Link]) -> list[Link]:
        return links[:1]

    def tag(self, request: Request, response: Response) -> Request | None:
        return request.replace(meta={**(request.meta or {}), "tagged": response.url})

    def parse_start_url(self, response: Response) -> Any:
        return {"start": response.url}

    def parse_item(self, response: Response, source: str, extra: str = "") -> Any:
        yield {"item": response.url, "source": source, "extra": extra}

    def process_results(self, response: Response, results: Iterable[Any]) -> Iterable[Any]:
        for result in results:
            if isinstance(result, dict):
                result = {**result, "processed": True}
            yield result


def test_rule_defaults_are_scrapys() -> None:
    bare = Rule()
    assert bare.follow is True and bare.callback is None and bare.cb_kwargs == {}
    assert isinstance(bare.link_extractor, LinkExtractor)
    assert Rule(callback="parse_item").follow is False
    assert Rule(callback="parse_item", follow=True).follow is True
    assert Rule(follow=False).follow is False
    assert scrapy.spiders.Rule is Rule and scrapy.spiders.CrawlSpider is CrawlSpider
    assert scrapy.spiders.Spider is scrapy.Spider is Spider


async def test_start_pages_run_parse_start_url_then_every_rule_in_order() -> None:
    spider = ShopSpider()
    [start] = list(spider.start_requests())
    assert (start.url, start.callback) == (URL, "_parse")
    values = await collect(spider._parse(html()))
    assert values[0] == {"start": URL, "processed": True}
    requests = requests_in(values)
    # Rule 0 keeps only its first link (process_links); rule 1 takes the other links it
    # extracts, those rule 0 took excepted; rule 2 tags its request.
    assert [(r.url, r.meta) for r in requests] == [
        (URL + "category/1", {"rule": 0, "link_text": "Cat 1"}),
        (URL + "category/2", {"rule": 1, "link_text": "Cat 2"}),
        (URL + "item/1", {"rule": 1, "link_text": "Item 1"}),
        (URL + "item/2", {"rule": 1, "link_text": "Item 2"}),
        (URL + "about", {"rule": 2, "link_text": "About", "tagged": URL}),
    ]
    assert {(r.callback, r.errback) for r in requests} == {("_callback", "_errback")}


async def test_a_rule_callback_gets_its_cb_kwargs_and_follows_only_if_told() -> None:
    spider = ShopSpider()
    item_request = requests_in(await collect(spider._parse(html())))[2]
    item_request.cb_kwargs = {"extra": "from the request"}
    response = followed(item_request)
    values = await collect(spider._callback(response, **response.cb_kwargs))
    assert values == [
        {"item": URL + "item/1", "source": "rule", "extra": "from the request", "processed": True}
    ]  # rule 1 has a callback, so it does not follow


async def test_a_rule_without_a_callback_follows_and_one_with_follow_true_does_both() -> None:
    spider = ShopSpider()
    requests = requests_in(await collect(spider._parse(html())))
    category = await collect(spider._callback(followed(requests[0])))
    assert [r.url for r in requests_in(category)] == [
        URL + "category/1", URL + "category/2", URL + "item/1", URL + "item/2", URL + "about",
    ]  # fmt: skip
    assert len(category) == 5  # no callback: links only
    about = await collect(spider._callback(followed(requests[4])))
    assert about[0] == {"about": URL + "about", "processed": True}
    assert len(requests_in(about)) == 5


async def test_async_callbacks_and_parse_without_a_callback() -> None:
    class AsyncSpider(CrawlSpider):
        name = "async_rules"
        rules = (
            Rule(LinkExtractor(allow="/item/"), callback="gen"),
            Rule(LinkExtractor(allow="/category/"), callback="coro"),
        )

        async def gen(self, response: Response) -> AsyncIterator[Any]:
            yield {"gen": response.url}

        async def coro(self, response: Response) -> list[Any]:
            return [{"coro": response.url}]

    spider = AsyncSpider()
    requests = requests_in(await collect(spider.parse(html())))  # parse is _parse here
    assert len(requests) == 4
    results = [await collect(spider._callback(followed(r))) for r in requests]
    assert results == [
        [{"gen": URL + "item/1"}], [{"gen": URL + "item/2"}],
        [{"coro": URL + "category/1"}], [{"coro": URL + "category/2"}],
    ]  # fmt: skip


async def test_only_html_is_followed_and_follow_links_can_be_off() -> None:
    spider = ShopSpider()
    xml = Response(URL, 200, {"Content-Type": "text/xml"}, b"<a href='/item/9'>9</a>", Request(URL))
    assert type(xml).__name__ == "XmlResponse"
    assert requests_in(await collect(spider._parse(xml))) == []

    class Quiet(ShopSpider):
        _follow_links = False

    assert await collect(Quiet()._parse(html())) == [{"start": URL, "processed": True}]


async def test_errbacks_run_per_rule() -> None:
    class Failing(CrawlSpider):
        name = "failing"
        rules = (
            Rule(LinkExtractor(allow="/item/"), callback="parse_item", errback="failed"),
            Rule(LinkExtractor(allow="/category/")),
        )

        def parse_item(self, response: Response) -> Any:
            return []

        def failed(self, failure: FetchError) -> Any:
            request = failure.request  # type: ignore[attr-defined]
            return {"failed": request.url, "reason": failure.reason, "rule": request.meta["rule"]}

    spider = Failing()
    requests = requests_in(await collect(spider._parse(html())))
    item, category = requests[0], requests[2]  # rule 0's links come first
    assert (item.url, category.url) == (URL + "item/1", URL + "category/1")
    failure = FetchError(item.url, "http_404")
    failure.request = Request.from_wire(item.to_wire())  # type: ignore[attr-defined]
    assert list(spider._errback(failure)) == [
        {"failed": URL + "item/1", "reason": "http_404", "rule": 0}
    ]
    other = FetchError(category.url, "timeout")
    other.request = category  # type: ignore[attr-defined]
    assert list(spider._errback(other)) == []


def test_a_rule_naming_a_missing_method_fails_when_the_spider_is_made() -> None:
    class Typo(CrawlSpider):
        name = "typo"
        rules = (Rule(LinkExtractor(), callback="parse_itme"),)

    with pytest.raises(SpiderLoadError, match=r"rule 0 has callback='parse_itme', which is not"):
        Typo()


def test_compiled_rules_stay_out_of_the_state_sent_to_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spider = ShopSpider(color="red")
    with caplog.at_level(logging.WARNING):
        state = spider_state(spider)
    assert set(state) == {"color"}
    assert not caplog.records
    assert len(spider._rules) == 3 and callable(spider._rules[2].callback)


def test_a_scrapy_crawl_spider_crawls_the_quotes_site_with_rules_alone(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    """``tests/scrapy_spiders/quotes_crawl.py``: a ``li.next`` rule with a callback and
    ``follow=True``, an ``/author/`` rule with a callback, ``parse_start_url``; no
    Request in the spider. Exactly the site's 100 quotes and 50 authors."""
    out = tmp_path / "crawl.jsonl"
    result = run_cli(
        ["crawl", "quotes_crawl", "--spiders-dir", str(SCRAPY_SPIDERS), "--workers", "2",
         "-a", f"start_urls={quotes_site}", "-o", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "crawl finished: 60 pages, 150 items, 0 errors" in result.stdout
    items = read_items(out)
    truth = json.loads((shared_dir / "sites" / "quotes-groundtruth.json").read_text())
    quotes = sorted(
        (str(i["text"]), str(i["author"]), tuple(i["tags"]))  # type: ignore[arg-type]
        for i in items
        if i["kind"] == "quote"
    )
    assert quotes == sorted((q["text"], q["author"], tuple(q["tags"])) for q in truth["quotes"])
    base = quotes_site.rstrip("/")
    authors = sorted(
        (str(i["name"]), i["born_date"], i["born_location"], str(i["url"]).removeprefix(base))
        for i in items
        if i["kind"] == "author"
    )
    assert authors == sorted(
        (a["name"], a["born_date"], a["born_location"], a["url"]) for a in truth["authors"]
    )
    assert {i["link_text"] for i in items if i["kind"] == "author"} == {"(about)"}
