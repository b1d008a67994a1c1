"""End to end: the real CLI, server and worker processes against real local sites."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiderfarm.demosite import Catalogue
from tests.farm import (
    ServerProcess,
    read_items,
    run_cli,
    start_worker,
    wait_all,
    write_key,
)
from tests.sites import run_subprocess_site, stop_subprocess

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def catalogue_site() -> Iterator[tuple[str, Catalogue]]:
    """The demo catalogue (500 pages) served by its own process."""
    cat = Catalogue(pages=500)
    proc, base = run_subprocess_site(
        [sys.executable, "-m", "spiderfarm.demosite", "--port", "0", "--pages", "500"]
    )
    try:
        yield base, cat
    finally:
        stop_subprocess(proc)


def _check_quotes(items: list[dict[str, object]], shared_dir: Path) -> None:
    truth = json.loads((shared_dir / "sites" / "quotes-groundtruth.json").read_text())
    quotes = [i for i in items if i["type"] == "quote"]
    authors = [i for i in items if i["type"] == "author"]
    assert len(quotes) == 100
    assert len(authors) == 50
    assert len({(q["text"], q["author"]) for q in quotes}) == 100
    assert len({a["name"] for a in authors}) == 50
    assert len(items) == 150
    # Cross-check contents, not just counts, against the independent crawl.
    assert {q["text"] for q in quotes} == {q["text"] for q in truth["quotes"]}
    assert {a["name"] for a in authors} == {a["name"] for a in truth["authors"]}


def test_crawl_quotes_with_two_workers(quotes_site: str, tmp_path: Path, shared_dir: Path) -> None:
    out = tmp_path / "quotes.jsonl"
    result = run_cli(
        ["crawl", "quotes", "-a", f"start_url={quotes_site}", "--workers", "2", "-o", str(out)]
    )
    assert result.returncode == 0, result.stderr
    _check_quotes(read_items(out), shared_dir)
    assert "crawl finished: 60 pages, 150 items, 0 errors" in result.stdout


def test_server_and_two_workers_crawl_quotes(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    out = tmp_path / "quotes.jsonl"
    key = write_key(tmp_path)
    server = ServerProcess(
        ["quotes", "-a", f"start_url={quotes_site}", "-o", str(out)], key, tmp_path
    )
    workers = [start_worker(server.address, key) for _ in range(2)]
    assert wait_all(workers, 60) == [0, 0]
    assert server.wait(30) == 0, server.output()
    _check_quotes(read_items(out), shared_dir)


def test_server_and_workers_crawl_exact_page_set(
    catalogue_site: tuple[str, Catalogue], tmp_path: Path
) -> None:
    base, cat = catalogue_site
    out = tmp_path / "pages.jsonl"
    key = write_key(tmp_path)
    server = ServerProcess(["catalogue", "-a", f"start_url={base}", "-o", str(out)], key, tmp_path)
    workers = [start_worker(server.address, key, "--concurrency", "8") for _ in range(2)]
    assert wait_all(workers, 60) == [0, 0]
    assert server.wait(30) == 0, server.output()
    items = read_items(out)
    urls = [str(i["url"]) for i in items]
    assert len(urls) == 500
    expected = {base.rstrip("/") + path for path in cat.paths()}
    assert set(urls) == expected
    by_url = {str(i["url"]): i for i in items}
    for n in (0, 1, 250, 499):
        want = cat.item(n)
        got = by_url[base.rstrip("/") + want["path"]]
        assert (got["title"], got["price"], got["sku"]) == (
            want["title"], want["price"], want["sku"],
        )  # fmt: skip
    assert "crawl finished: 500 pages, 500 items, 0 errors" in server.output()


def test_demo_command(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    result = run_cli(["demo", "--pages", "300", "--workers", "2", "-o", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 300 pages, 300 items, 0 errors" in result.stdout
    assert len({i["url"] for i in read_items(out)}) == 300


def test_crawl_json_and_csv_feeds(catalogue_site: tuple[str, Catalogue], tmp_path: Path) -> None:
    base, _ = catalogue_site
    for ext in ("json", "csv"):
        out = tmp_path / f"items.{ext}"
        result = run_cli(
            ["crawl", "catalogue", "-a", f"start_url={base}", "--workers", "1",
             "-s", "max_pages=40", "-o", str(out)]
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        if ext == "json":
            rows = json.loads(out.read_text())
            assert len(rows) == 40
        else:
            lines = out.read_text().splitlines()
            assert lines[0] == "url,title,price,sku"
            assert len(lines) == 41


def test_links_spider_reaches_exactly_the_quotes_site(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    """The generic link follower against the site's independent crawl: the same 214 pages
    (redirects followed, fragments dropped, other hosts left alone)."""
    truth = json.loads((shared_dir / "sites" / "quotes-groundtruth.json").read_text())
    out = tmp_path / "pages.jsonl"
    result = run_cli(
        ["crawl", "links", "-a", f"start_url={quotes_site}", "--workers", "2", "-o", str(out)]
    )
    assert result.returncode == 0, result.stderr
    items = read_items(out)
    paths = [str(i["url"]).removeprefix(quotes_site.rstrip("/")) for i in items]
    assert len(paths) == len(set(paths)) == 214
    assert set(paths) == set(truth["reachable_html_urls"])
    assert {i["status"] for i in items} == {200}
