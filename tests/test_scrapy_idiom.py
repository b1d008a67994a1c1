"""Spiders written the way Scrapy users write them (``import spiderfarm as scrapy``, the
files in ``tests/scrapy_spiders/``), crawled by the real CLI with two workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from parsel import Selector

from tests.farm import read_items, run_cli

pytestmark = pytest.mark.timeout(180)

SPIDERS = Path(__file__).parent / "scrapy_spiders"


def crawl(spider: str, out: Path, *args: str) -> str:
    result = run_cli(
        ["crawl", spider, "--spiders-dir", str(SPIDERS), "--workers", "2", "-o", str(out), *args]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def truth(shared_dir: Path) -> dict[str, list[dict[str, object]]]:
    data: dict[str, list[dict[str, object]]] = json.loads(
        (shared_dir / "sites" / "quotes-groundtruth.json").read_text()
    )
    return data


def test_the_tutorial_spider(quotes_site: str, tmp_path: Path, shared_dir: Path) -> None:
    out = tmp_path / "quotes.jsonl"
    stdout = crawl("quotes_tutorial", out, "-a", f"start_urls={quotes_site}page/1/")
    items = read_items(out)
    expected = [(q["text"], q["author"], q["tags"]) for q in truth(shared_dir)["quotes"]]
    assert sorted((i["text"], i["author"], i["tags"]) for i in items) == sorted(expected)  # type: ignore[type-var]
    assert "crawl finished: 10 pages, 100 items, 0 errors" in stdout


def test_state_set_in_start_requests_reaches_every_callback(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    out = tmp_path / "state.jsonl"
    stdout = crawl("quotes_state", out, "-a", f"start_url={quotes_site}")
    items = read_items(out)
    host = quotes_site.split("/")[2]
    assert len(items) == 100
    assert {i["host"] for i in items} == {host}
    assert {tuple(i["init"]) for i in items} == {("from-init",)}  # type: ignore[arg-type]
    by_text = {q["text"]: q["tags"] for q in truth(shared_dir)["quotes"]}
    assert all(i["tags"] == by_text[i["text"]][:3] for i in items)  # type: ignore[index]
    assert "crawl finished: 10 pages, 100 items, 0 errors" in stdout


def first_pages(shared_dir: Path) -> dict[str, int]:
    """Each author page's path and the first page quoting its author, from the site's
    own files (independent of spiderfarm)."""
    first: dict[str, int] = {}
    for page in range(1, 11):
        html = (shared_dir / "sites" / "quotes" / "page" / str(page) / "index.html").read_text()
        for href in Selector(text=html).css("div.quote span a::attr(href)").getall():
            first.setdefault(href.rstrip("/") + "/", page)  # the server redirects to "/"
    return first


def test_async_start_with_meta_and_cb_kwargs(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    out = tmp_path / "async.jsonl"
    stdout = crawl("quotes_async", out, "-a", f"start_url={quotes_site}")
    items = read_items(out)
    starts = [i for i in items if i["kind"] == "start"]
    authors = [i for i in items if i["kind"] == "author"]
    assert starts == [{"kind": "start", "site": quotes_site.rstrip("/")}]
    assert len(authors) == 50
    assert all(a["under"] is True for a in authors)
    found = {str(a["url"]).removeprefix(quotes_site.rstrip("/")): a["first_quoted_on_page"]
             for a in authors}  # fmt: skip
    assert found == first_pages(shared_dir)
    assert {a["name"] for a in authors} == {a["name"] for a in truth(shared_dir)["authors"]}
    assert "crawl finished: 60 pages, 51 items, 0 errors" in stdout


def test_an_endless_start_stream_crawls_to_max_pages(site: str, tmp_path: Path) -> None:
    out = tmp_path / "endless.jsonl"
    stdout = crawl("endless", out, "-a", f"start_url={site}")
    items = read_items(out)
    assert len(items) == 30
    assert len({i["url"] for i in items}) == 30
    assert "crawl max_pages: 30 pages, 30 items, 0 errors" in stdout
