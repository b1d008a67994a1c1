"""Items JSON or UTF-8 cannot hold: refused on the worker, and never able to leave the
frontier inconsistent should one reach it anyway (issue 10, items 2 and 3)."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from spiderfarm.feeds import open_feed
from spiderfarm.frontier import Frontier
from spiderfarm.items import encode_item
from spiderfarm.settings import Settings
from tests.farm import read_items, run_cli
from tests.test_frontier import Clock, entry, lease, ok, urls

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"text": "\ud800"}, r"holds '\\ud800', which UTF-8 cannot encode"),
        ({"\udfff": 1}, r"holds '\\udfff', which UTF-8 cannot encode"),
        ({"price": float("nan")}, "NaN or an infinity"),
        ({"max": float("inf")}, "NaN or an infinity"),
        ({"min": float("-inf")}, "NaN or an infinity"),
    ],
)
def test_items_the_feed_cannot_hold_are_refused_where_encoded(
    item: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_item(item)


def test_a_deeply_nested_item_is_a_value_error() -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_item({"deep": nested})


def test_plain_unicode_still_encodes() -> None:
    assert encode_item({"t": "é€😀"}) == '{"t": "é€😀"}'


def test_an_outcome_the_feed_refuses_settles_only_its_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that sends a lone surrogate anyway (an old or hostile one): the request is
    retried, then dead-lettered, the other pages are written, and the crawl finishes."""
    feed = open_feed(str(tmp_path / "out.jsonl"))
    settings = Settings.merge({"obey_robots": False, "autothrottle": False, "max_retries": 1})
    clock = Clock()
    frontier = Frontier(settings, write_items=feed.write, clock=clock)
    frontier.push([entry("http://a.test/bad"), entry("http://a.test/good")])
    bad_line = '{"t": "\ud800"}'
    with caplog.at_level(logging.ERROR, logger="spiderfarm.frontier"):
        for attempt in range(2):
            leases = lease(frontier)
            by_url = dict(zip(urls(leases), (lid for lid, _, _ in leases), strict=True))
            outcomes = [ok(by_url["http://a.test/bad"], items=[bad_line])]
            if attempt == 0:
                outcomes.append(ok(by_url["http://a.test/good"], items=['{"n": 1}']))
            _, refused, _ = frontier.exchange("w1", outcomes, 0)
            assert refused == []
            clock.advance(settings.retry_backoff_max_s)  # the longest backoff is over
    assert frontier.tick() == "finished"
    feed.close()
    assert (tmp_path / "out.jsonl").read_text() == '{"n": 1}\n'
    stats = frontier.stats
    assert stats["pages"] == 1
    assert stats["retries/bad_outcome"] == 1
    assert stats["failed/bad_outcome"] == 1
    assert stats["errors/bad_outcome"] == 2
    assert frontier.dead_letters == [("http://a.test/bad", "bad_outcome", 2)]
    assert frontier.status()["in_flight"] == 0
    assert "cannot apply the outcome for http://a.test/bad" in caplog.text


SPIDER = """
from spiderfarm import Spider

class BadItems(Spider):
    name = "bad_items"
    base = ""

    def start_requests(self):
        for name in ("a", "b", "c", "surrogate", "nan", "inf", "d"):
            yield self.request(name)

    def request(self, name):
        from spiderfarm import Request
        return Request(f"{self.base}page/{name}", callback=self.parse, cb_kwargs={"name": name})

    def parse(self, response, name):
        if name == "surrogate":
            yield {"name": name, "text": "\\ud800"}
        elif name == "nan":
            yield {"name": name, "price": float("nan")}
        elif name == "inf":
            yield {"name": name, "max": float("inf")}
        yield {"name": name, "ok": True}
"""


def test_bad_items_cost_only_themselves_in_a_real_crawl(site: str, tmp_path: Path) -> None:
    spider = tmp_path / "bad_items.py"
    spider.write_text(textwrap.dedent(SPIDER))
    out = tmp_path / "items.jsonl"
    result = run_cli(
        ["crawl", str(spider), "-a", f"base={site}", "--workers", "2", "-o", str(out),
         "-s", "obey_robots=false"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    items = read_items(out)
    assert sorted(str(i["name"]) for i in items) == sorted(
        ["a", "b", "c", "surrogate", "nan", "inf", "d"]
    )
    assert all(i["ok"] is True for i in items)
    # strict JSON: every line parses with a reader that refuses NaN
    for line in out.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert "crawl finished: 7 pages, 7 items, 3 errors" in result.stdout
    assert "errors/bad_item: 3" in result.stdout
