"""The worker when a spider or the server misbehaves: long notes, refused outcomes,
unpicklable requests, late acks, odd callback return values and errbacks.

Each crawl is the real ``python -m spiderfarm crawl`` (server and one worker process)
against a small aiohttp site on ``127.0.0.1:0`` that records every path it serves.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from spiderfarm import Request
from spiderfarm.http import HtmlResponse
from spiderfarm.protocol import join_notes
from spiderfarm.settings import Settings
from spiderfarm.worker import Links, PageResult, PageRunner, pump
from spiderfarm.worker import links as links_module
from tests.farm import read_items, run_cli
from tests.sites import ThreadedSites

pytestmark = pytest.mark.timeout(120)


@dataclass
class Crawl:
    returncode: int
    stdout: str
    stderr: str
    items: list[dict[str, object]]
    hits: Counter[str]  # path -> times the site served it
    base: str  # the site's URL, ending in "/"


def pages_app(hits: list[str], links: dict[str, list[str]], *, rows: int = 0) -> web.Application:
    """``/p/{name}``: ``<h1>name</h1>``, ``rows`` ``<li data-price>`` rows (every odd one
    without a price) and links to ``/p/{target}`` for each target in ``links[name]``."""

    async def page(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits.append(request.path)
        if request.query.get("delay_again") and hits.count(request.path) > 1:
            await asyncio.sleep(float(request.query["delay_again"]))
        items = "".join(f'<li data-price="{"" if i % 2 else i}">{i}</li>' for i in range(rows))
        anchors = "".join(f'<a href="/p/{t}">{t}</a>' for t in links.get(name, []))
        body = f"<html><body><h1>{name}</h1><ul>{items}</ul>{anchors}</body></html>"
        return web.Response(text=body, content_type="text/html")

    async def down(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=503, text="down")

    async def missing(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=404, text="no such page")

    app = web.Application()
    app.router.add_get("/p/{name}", page)
    app.router.add_get("/down", down)
    app.router.add_get("/missing", missing)
    return app


def crawl(
    tmp_path: Path,
    source: str,
    links: dict[str, list[str]] | None = None,
    *args: str,
    rows: int = 0,
) -> Crawl:
    """Crawl with ``source`` (``BASE`` in it is the site's URL) and one worker."""
    hits: list[str] = []
    out = tmp_path / "out.jsonl"
    with ThreadedSites(pages_app(hits, links or {}, rows=rows)) as (site,):
        spider = tmp_path / "spider.py"
        spider.write_text(textwrap.dedent(source).replace("BASE", site.url()))
        result = run_cli(
            ["crawl", str(spider), "-q", "--workers", "1", "-o", str(out),
             "-s", "obey_robots=false", *args],
            timeout_s=90,
        )  # fmt: skip
        base = site.url()
    items = read_items(out) if out.exists() else []
    return Crawl(result.returncode, result.stdout, result.stderr, items, Counter(hits), base)


# -- notes and close reasons stay short --------------------------------------------


def test_notes_are_joined_with_counts_in_order_of_first_appearance() -> None:
    notes = ["items/dropped"] * 20 + ["callback_error", "items/dropped", "bad_item"]
    assert join_notes(notes) == "items/dropped*21,callback_error,bad_item"
    assert join_notes(["pipeline_error"]) == "pipeline_error"
    assert join_notes([]) == ""


NOTES_SPIDER = """
from spiderfarm import DropItem, Spider


class RequirePrice:
    def process_item(self, item, spider):
        if not item.get("price"):
            raise DropItem("no price")
        return item


class Notes(Spider):
    name = "notes"
    start_urls = ["BASEp/0"]
    item_pipelines = [RequirePrice]

    def parse(self, response):
        for li in response.css("li"):
            yield {"page": response.url, "price": li.attrib["data-price"]}
        yield {"page": response.url, "price": "1", "bad": object()}  # not JSON: bad_item
        yield from response.follow_all(css="a")
"""


def test_a_page_with_many_dropped_items_is_acked_and_counted(tmp_path: Path) -> None:
    # 40 rows a page, 20 without a price: one note per drop would make a reason of over
    # 300 characters, which the server refuses.
    links = {"0": ["1", "2", "3"]}
    run = crawl(tmp_path, NOTES_SPIDER, links, "-s", "lease_timeout_s=3", "-s", "max_retries=0",
                rows=40)  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("crawl finished: 4 pages, 80 items, 4 errors in ")
    assert lines[1:3] == ["  errors/bad_item: 4", "  items/dropped: 80"]
    assert run.hits == Counter({"/p/0": 1, "/p/1": 1, "/p/2": 1, "/p/3": 1})
    assert Counter(item["page"] for item in run.items) == {f"{run.base}p/{n}": 20 for n in range(4)}
    assert "refused" not in run.stderr


def test_a_long_close_spider_reason_is_cut_to_100_characters(tmp_path: Path) -> None:
    source = """
    from spiderfarm import CloseSpider, Spider


    class Closer(Spider):
        name = "closer"
        start_urls = ["BASEp/0"]

        def parse(self, response):
            yield {"url": response.url}
            raise CloseSpider("enough " + "x" * 300)
    """
    run = crawl(tmp_path, source, {}, "-s", "lease_timeout_s=3", "-s", "max_retries=0")
    assert run.returncode == 0, run.stderr
    reason = "enough " + "x" * 93
    assert run.stdout.startswith(f"crawl {reason}: 1 pages, 1 items, 0 errors in ")
    assert run.items == [{"url": f"{run.base}p/0"}]
    assert run.hits == Counter({"/p/0": 1})


# -- outcomes the server refuses, requests that do not pickle ----------------------


def test_a_request_whose_meta_does_not_pickle_is_dropped_alone(tmp_path: Path) -> None:
    source = """
    from spiderfarm import Spider


    class Pickles(Spider):
        name = "pickles"
        start_urls = ["BASEp/0"]

        def parse(self, response):
            yield {"url": response.url}
            for a in response.css("a"):
                # a selector in meta: it cannot cross to the server
                meta = {"anchor": a} if a.attrib["href"].endswith("/3") else {"n": 1}
                yield response.follow(a, callback=self.parse, meta=meta)
    """
    run = crawl(tmp_path, source, {"0": ["1", "2", "3", "4", "5"]})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("crawl finished: 5 pages, 5 items, 0 errors in ")
    assert run.hits == Counter({f"/p/{n}": 1 for n in (0, 1, 2, 4, 5)})
    assert sorted(str(i["url"]) for i in run.items) == [f"{run.base}p/{n}" for n in (0, 1, 2, 4, 5)]
    dropped = [line for line in run.stderr.splitlines() if "dropping request" in line]
    assert len(dropped) == 1
    expected = f"dropping request {run.base}p/3: its headers, meta or cb_kwargs do not pickle"
    assert expected in dropped[0]
    assert "can't pickle Selector objects" in dropped[0]


def test_a_refused_outcome_is_lost_alone_and_its_links_go_out_with_the_next_fetch(
    tmp_path: Path,
) -> None:
    # /p/3's first visit yields a request the server refuses (a float priority): only that
    # outcome is lost; its lease expires, the page is fetched again, and the link to /p/6
    # it had yielded the first time goes out then.
    source = """
    from spiderfarm import Request, Spider


    class Refused(Spider):
        name = "refused"
        start_urls = ["BASEp/0"]
        visits = 0

        def parse(self, response):
            yield {"url": response.url}
            yield from response.follow_all(css="a")
            if response.url.endswith("/p/3"):
                type(self).visits += 1
                if self.visits == 1:
                    bad = Request(response.urljoin("/p/7"))
                    bad.priority = 0.5
                    yield bad
    """
    links = {"0": ["1", "2", "3", "4", "5"], "3": ["6"]}
    run = crawl(tmp_path, source, links, "-s", "lease_timeout_s=2")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("crawl finished: 7 pages, 7 items, 0 errors in ")
    assert run.hits == Counter({"/p/0": 1, "/p/1": 1, "/p/2": 1, "/p/3": 2, "/p/4": 1,
                                "/p/5": 1, "/p/6": 1})  # fmt: skip
    assert sorted(str(i["url"]) for i in run.items) == [f"{run.base}p/{n}" for n in range(7)]
    lost = [line for line in run.stderr.splitlines() if "dropping the outcome of" in line]
    assert len(lost) == 1
    assert f"dropping the outcome of {run.base}p/3 (ok, lease " in lost[0]


# -- late acks: the links of a refused ack are sent again --------------------------

LATE_SPIDER = """
import asyncio

from spiderfarm import Spider


class Late(Spider):
    name = "late"
    start_urls = ["BASEp/0?delay_again=DELAY"]
    first = True

    async def parse(self, response):
        slow = "/p/0" in response.url and self.first
        type(self).first = False
        yield {"url": response.url}
        for request in response.follow_all(css="a"):
            yield request
        if slow:
            await asyncio.sleep(SLEEP)  # past lease_timeout_s: this ack is refused
"""


@pytest.mark.parametrize(
    ("delay_again", "sleep_s", "lease_s"),
    [(0, 3.5, 1.5), (2, 4, 3)],
    ids=["fetched-again-before-the-refusal", "fetched-again-after-the-refusal"],
)
def test_the_links_of_a_refused_late_ack_are_sent_again(
    tmp_path: Path, delay_again: float, sleep_s: float, lease_s: float
) -> None:
    source = LATE_SPIDER.replace("DELAY", str(delay_again)).replace("SLEEP", str(sleep_s))
    run = crawl(tmp_path, source, {"0": ["1", "2"]}, "-s", f"lease_timeout_s={lease_s}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("crawl finished: 3 pages, 3 items, 0 errors in ")
    assert run.hits == Counter({"/p/0": 2, "/p/1": 1, "/p/2": 1})
    start = f"{run.base}p/0?delay_again={delay_again}"
    assert sorted(str(i["url"]) for i in run.items) == [start, f"{run.base}p/1", f"{run.base}p/2"]
    assert "server refused 1 late acks" in run.stderr


# -- callbacks returning one item, errbacks ----------------------------------------


def test_a_callback_returning_a_dataclass_or_a_mapping_yields_one_item(tmp_path: Path) -> None:
    source = """
    import dataclasses
    import types

    from spiderfarm import Request, Spider


    @dataclasses.dataclass
    class Product:
        name: str


    class Returns(Spider):
        name = "returns"

        def start_requests(self):
            for name in ("ret_dataclass", "aret_dataclass", "ret_mapping", "ret_dict"):
                yield Request(f"BASEp/{name}", callback=name)

        def ret_dataclass(self, response):
            return Product("a")

        async def aret_dataclass(self, response):
            return Product("b")

        def ret_mapping(self, response):
            return types.MappingProxyType({"name": "c"})

        def ret_dict(self, response):
            return {"name": "d"}
    """
    run = crawl(tmp_path, source)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("crawl finished: 4 pages, 4 items, 0 errors in ")
    assert sorted(str(item["name"]) for item in run.items) == ["a", "b", "c", "d"]
    assert all(len(item) == 1 for item in run.items)


def test_an_errback_gets_the_failure_alone_with_its_request(tmp_path: Path) -> None:
    source = """
    from spiderfarm import Request, Spider


    class Errback(Spider):
        name = "errback"

        def start_requests(self):
            for path in ("p/ok", "missing"):
                yield Request("BASE" + path, callback="parse_item", errback="on_error",
                              cb_kwargs={"category": "books"}, meta={"shelf": 3})

        def parse_item(self, response, category):
            yield {"url": response.url, "category": category}

        def on_error(self, failure):  # Scrapy's errback(failure)
            request = failure.request
            yield {"failed": request.url, "reason": failure.reason,
                   "category": request.cb_kwargs["category"], "shelf": request.meta["shelf"]}
    """
    run = crawl(tmp_path, source)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("crawl finished: 1 pages, 2 items, 1 errors in ")
    assert sorted(run.items, key=str) == [
        {"failed": f"{run.base}missing", "reason": "http_404", "category": "books", "shelf": 3},
        {"url": f"{run.base}p/ok", "category": "books"},
    ]
    assert run.hits == Counter({"/p/ok": 1, "/missing": 1})


def test_an_errback_runs_once_and_the_request_is_still_a_dead_letter(tmp_path: Path) -> None:
    source = """
    from spiderfarm import Request, Spider


    class DeadErrback(Spider):
        name = "dead_errback"

        def start_requests(self):
            yield Request("BASEdown", errback=self.on_error)

        def on_error(self, failure):
            yield {"failed": failure.request.url, "reason": failure.reason}
    """
    dead = tmp_path / "dead.jsonl"
    run = crawl(tmp_path, source, {}, "-s", "retry_backoff_s=0.05", "-s", "max_retries=2",
                "--dead-letters", str(dead))  # fmt: skip
    assert run.returncode == 0, run.stderr
    url = f"{run.base}down"
    lines = run.stdout.splitlines()
    assert lines[0].startswith("crawl finished: 0 pages, 1 items, 1 errors in ")
    assert lines[1:5] == [
        "  failed/http_503: 1",
        "  retries/http_503: 2",
        f"  dead letter: {url} (http_503, 3 attempts)",
        f"items written to {tmp_path / 'out.jsonl'}",
    ]
    assert [json.loads(line) for line in dead.read_text().splitlines()] == [
        {"url": url, "reason": "http_503", "attempts": 3}
    ]
    assert run.items == [{"failed": url, "reason": "http_503"}]  # the errback ran once
    assert run.hits == Counter({"/down": 3})


def test_an_errback_that_raises_is_counted_with_its_traceback(tmp_path: Path) -> None:
    source = """
    from spiderfarm import Request, Spider


    class BadErrback(Spider):
        name = "bad_errback"

        def start_requests(self):
            yield Request("BASEmissing", errback=self.on_error)

        def on_error(self, failure):
            yield {"failed": failure.request.url}
            raise KeyError("no such thing")
    """
    run = crawl(tmp_path, source)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("crawl finished: 0 pages, 1 items, 2 errors in ")
    assert lines[1:3] == ["  errors/callback_error: 1", "  failed/http_404: 1"]
    assert run.items == [{"failed": f"{run.base}missing"}]  # kept: yielded before the raise
    assert "callback on_error failed on" in run.stderr
    assert "KeyError: 'no such thing'" in run.stderr  # the traceback


def test_a_pipeline_whose_open_spider_raises_stops_the_crawl_naming_it(tmp_path: Path) -> None:
    source = """
    from spiderfarm import Request, Spider


    class Database:
        def open_spider(self, spider):
            raise ConnectionError("database is down")

        def process_item(self, item, spider):
            return item


    class NeedsDb(Spider):
        name = "needs_db"
        item_pipelines = [Database]
        start_urls = ["BASEp/a"]

        def parse(self, response):
            yield {"url": response.url}
    """
    run = crawl(tmp_path, source)
    assert run.returncode == 2, run.stdout + run.stderr
    assert (
        "error: worker: item pipeline spiderfarm_spiders.spider.Database.open_spider failed: "
        "ConnectionError: database is down"
    ) in run.stderr
    assert "error: 1 worker(s) stopped before crawling" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.items == []
    assert run.hits == Counter()


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_blocking_callback_does_not_make_a_live_worker_look_dead(
    tmp_path: Path, kind: str
) -> None:
    """time.sleep in a callback holds the event loop past worker_timeout_s: the worker's
    heartbeat thread keeps it alive, so no lease is taken back, and the stall is logged
    once with the callback's name."""
    source = """
    import time

    from spiderfarm import Request, Spider


    class Sleepy(Spider):
        name = "sleepy"

        def start_requests(self):
            for n in range(4):
                yield Request(f"BASEp/{n}")

        KIND parse(self, response):
            time.sleep(1.6)  # longer than worker_timeout_s=1
            yield {"url": response.url}
    """
    source = source.replace("KIND", kind)
    run = crawl(tmp_path, source, {}, "-s", "worker_timeout_s=1", "--log-level", "INFO")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("crawl finished: 4 pages, 4 items, 0 errors in ")
    assert "workers/dead" not in run.stdout and "silent for" not in run.stderr
    assert sorted(str(item["url"]) for item in run.items) == [f"{run.base}p/{n}" for n in range(4)]
    assert run.hits == Counter({f"/p/{n}": 1 for n in range(4)})  # each fetched once
    assert run.stderr.count("the event loop was blocked for") == 1
    assert "while callback parse ran" in run.stderr


# -- links past the per-page cap ---------------------------------------------------


def test_a_page_past_the_link_cap_stops_its_callback_at_the_cap(tmp_path: Path) -> None:
    """A page of 250,000 links: the callback is not run past the 100,000th request (it
    used to make all of them, then drop the rest), and the crawl goes on."""
    counted = tmp_path / "yielded.txt"
    source = f"""
    from pathlib import Path

    from spiderfarm import Request, Spider


    class Dense(Spider):
        name = "dense"

        def start_requests(self):
            yield Request("BASEp/hub", callback=self.parse_hub)

        def parse_hub(self, response):
            n = 0
            try:
                for request in response.follow_all(css="a"):
                    n += 1
                    yield request
                yield {{"done": True}}
            finally:
                Path({str(counted)!r}).write_text(str(n))
    """
    links = {"hub": [str(n) for n in range(250_000)]}
    run = crawl(tmp_path, source, links, "-s", "max_pages=1")
    assert run.returncode == 0, run.stderr
    assert counted.read_text() == "100001"  # the first request past the cap ended it
    assert run.stdout.startswith("crawl max_pages: 1 pages, 0 items, 1 errors in ")
    assert "  errors/too_many_links: 1" in run.stdout
    assert "keeping the first 100000, and not running its callback further" in run.stderr



@pytest.fixture
def links() -> Links:
    """A worker's link collection, as a worker builds it from the crawl's settings."""
    return Links(Settings.merge({}, {}), "bare")


def test_a_request_whose_meta_the_server_would_refuse_is_dropped_where_made(
    links: Links,
) -> None:
    deep: dict[str, object] = {}
    for _ in range(150):
        deep = {"d": deep}
    parent, result = Request("http://example.com/"), PageResult()
    links.add(Request("http://example.com/deep", meta=deep), parent, result)
    links.add(Request("http://example.com/flat", meta={"a": 1}), parent, result)
    assert [wire[0] for _, _, wire in result.requests] == ["http://example.com/flat"]
    assert result.notes == ["requests/bad_fields"]


def test_links_past_the_cap_are_not_recorded_as_sent(
    links: Links, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links_module, "MAX_LINKS_PER_PAGE", 3)
    parent = Request("http://example.com/")
    first = PageResult()
    for n in range(5):
        links.add(Request(f"http://example.com/p/{n}"), parent, first)
    assert [wire[0] for _, _, wire in first.requests] == [
        f"http://example.com/p/{n}" for n in range(3)
    ]
    assert first.notes == ["too_many_links"]
    second = PageResult()  # another page links to the two that were cut
    for n in (3, 4, 0):
        links.add(Request(f"http://example.com/p/{n}"), parent, second)
    assert [wire[0] for _, _, wire in second.requests] == [
        "http://example.com/p/3",
        "http://example.com/p/4",
    ]
    assert second.notes == []


async def test_a_callback_returning_one_pydantic_or_attrs_item_gives_one_item(
    tmp_path: Path,
) -> None:
    spider_file = tmp_path / "returns.py"
    spider_file.write_text(textwrap.dedent('''
        import attrs
        import pydantic
        from spiderfarm import Spider

        class Product(pydantic.BaseModel):
            name: str
            price: int

        @attrs.define
        class Book:
            title: str

        class Returns(Spider):
            name = "returns"

            def one_model(self, response):
                return Product(name="a", price=3)

            def one_attrs(self, response):
                return Book(title="b")
    '''))
    crawl_ = pump.Crawl.offline(str(spider_file))
    runner = PageRunner(crawl_.spider, crawl_.settings, None, crawl_.links)
    request = Request("http://example.com/")
    response = HtmlResponse(request.url, 200, {}, b"<html></html>", request)
    model = await runner.run_callback(request, response, "one_model")
    book = await runner.run_callback(request, response, "one_attrs")
    assert (model.items, model.notes) == (['{"name": "a", "price": 3}'], [])
    assert (book.items, book.notes) == (['{"title": "b"}'], [])
