"""Tests for spiderfarm.demosite against real aiohttp servers and real subprocesses."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from parsel import Selector

from spiderfarm.demosite import Catalogue, make_app

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
async def site500() -> AsyncIterator[tuple[Catalogue, TestServer, aiohttp.ClientSession]]:
    cat = Catalogue(pages=500, seed=3)
    server = TestServer(make_app(cat), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield cat, server, session
    finally:
        await server.close()


def _digest(cat: Catalogue) -> str:
    h = hashlib.sha256()
    for i in range(cat.pages):
        h.update(cat.render(i))
    return h.hexdigest()


def test_same_seed_renders_identical_bytes_and_other_seed_differs() -> None:
    a, b = Catalogue(pages=300, seed=7), Catalogue(pages=300, seed=7)
    assert [a.render(i) for i in range(300)] == [b.render(i) for i in range(300)]
    assert [a.item(i) for i in range(300)] == [b.item(i) for i in range(300)]
    c = Catalogue(pages=300, seed=8)
    assert a.render(0) != c.render(0)
    assert sum(a.item(i) != c.item(i) for i in range(300)) > 250


def test_rendering_is_identical_in_another_process() -> None:
    # Servers and the tests that check their crawls run in different processes.
    code = (
        "from spiderfarm.demosite import Catalogue; import hashlib; h = hashlib.sha256(); "
        "c = Catalogue(pages=200, seed=5); [h.update(c.render(i)) for i in range(200)]; "
        "print(h.hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**ENV, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == _digest(Catalogue(pages=200, seed=5))


def test_paths_and_items() -> None:
    cat = Catalogue(pages=12)
    assert cat.paths() == ["/"] + [f"/product/{i}.html" for i in range(1, 12)]
    assert [cat.path(i) for i in range(12)] == cat.paths()
    item = cat.item(7)
    assert set(item) == {"path", "title", "price", "sku"}
    assert item["path"] == "/product/7.html"
    assert item["sku"] == "SKU-000007"
    assert item["title"].startswith("Product 7: ")
    assert len(item["title"].split()) == 4
    assert item["price"].startswith("£")
    whole, pence = item["price"][1:].split(".")
    assert whole.isdigit() and len(pence) == 2 and pence.isdigit()
    with pytest.raises(IndexError):
        cat.path(12)
    with pytest.raises(IndexError):
        cat.render(-1)


def test_page_structure_and_links() -> None:
    cat = Catalogue(pages=1000, links_per_page=20)
    for i in (0, 1, 99, 999):
        html = cat.render(i).decode("utf-8")
        assert html.startswith("<!DOCTYPE html>")
        sel = Selector(text=html)
        assert sel.css('meta[charset="utf-8"]')
        assert sel.css("title::text").get() == f"{cat.item(i)['title']} | Spiderfarm Demo Catalogue"
        assert len(sel.css("h1.title")) == len(sel.css("span.price")) == 1
        assert len(sel.css("span.sku")) == len(sel.css("p.description")) == 1
        assert sel.css("ul.breadcrumb a::attr(href)").getall() == ["/"]
        hrefs = sel.css("a.related::attr(href)").getall()
        assert hrefs == [cat.path(j) for j in cat.links(i)]
        assert len(hrefs) == 20
        assert cat.path(i) not in hrefs
        children = [cat.path(j) for j in range(10 * i + 1, 10 * i + 11) if j < cat.pages]
        assert hrefs[: len(children)] == children


@pytest.mark.parametrize("page_bytes", [2000, 12_000, 15_000])
def test_page_sizes_within_ten_percent(page_bytes: int) -> None:
    cat = Catalogue(pages=400, page_bytes=page_bytes)
    sizes = [len(cat.render(i)) for i in range(cat.pages)]
    assert all(0.9 * page_bytes <= n <= 1.1 * page_bytes for n in sizes), (min(sizes), max(sizes))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pages": 0}, "pages"),
        ({"links_per_page": 0}, "links_per_page"),
        ({"page_bytes": -1}, "page_bytes"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Catalogue(**kwargs)


def test_tiny_catalogues_still_render() -> None:
    one = Catalogue(pages=1, links_per_page=3, page_bytes=0)
    assert one.links(0) == [0, 0, 0]
    assert b'<p class="description">' in one.render(0)
    chain = Catalogue(pages=5, links_per_page=1)
    assert [chain.links(i)[0] for i in range(4)] == [1, 2, 3, 4]


async def test_bfs_crawl_reaches_every_page_with_exact_items(
    site500: tuple[Catalogue, TestServer, aiohttp.ClientSession],
) -> None:
    cat, server, session = site500
    base = str(server.make_url("/"))
    netloc = urlsplit(base).netloc
    index = {path: i for i, path in enumerate(cat.paths())}

    async def fetch(path: str) -> tuple[str, str]:
        async with session.get(urljoin(base, path)) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            return path, await resp.text()

    seen = {"/"}
    frontier = ["/"]
    while frontier:
        pages = await asyncio.gather(*(fetch(p) for p in frontier))
        frontier = []
        for path, html in pages:
            sel = Selector(text=html)
            got = {
                "path": path,
                "title": sel.css("h1.title::text").get(),
                "price": sel.css("span.price::text").get(),
                "sku": sel.css("span.sku::text").get(),
            }
            assert got == cat.item(index[path])
            for href in sel.css("a::attr(href)").getall():
                url = urlsplit(urljoin(urljoin(base, path), href))
                if url.netloc == netloc and url.path not in seen:
                    seen.add(url.path)
                    frontier.append(url.path)
    assert seen == set(cat.paths())


async def test_unknown_paths_are_404(
    site500: tuple[Catalogue, TestServer, aiohttp.ClientSession],
) -> None:
    _, server, session = site500
    for path in ("/robots.txt", "/product/500.html", "/product/abc.html", "/index.html", "/x"):
        async with session.get(server.make_url(path)) as resp:
            assert resp.status == 404, path
    async with session.get(server.make_url("/product/499.html")) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_and_exits_cleanly_on_signal(signum: signal.Signals) -> None:
    cat = Catalogue(pages=50)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spiderfarm.demosite",
        "--port",
        "0",
        "--pages",
        "50",
        env=ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        prefix, _, rest = line.partition(" ")
        assert prefix == "serving"
        url, _, count = rest.rstrip("\n").partition(" ")
        assert count == "(50 pages)"
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.path == "/"
        assert parts.port is not None and parts.port > 0
        async with aiohttp.ClientSession() as session:
            for i in (0, 49):
                async with session.get(urljoin(url, cat.path(i))) as resp:
                    assert resp.status == 200
                    assert await resp.read() == cat.render(i)
        proc.send_signal(signum)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        assert out == b""
        assert err == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_write_static(tmp_path: Path) -> None:
    target = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "spiderfarm.demosite", "--pages", "30", "--write", str(target)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == f"wrote 30 pages to {target}\n"
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    expected = ["index.html"] + [f"product/{i}.html" for i in range(1, 30)]
    assert files == sorted(expected)
    cat = Catalogue(pages=30)
    assert (target / "index.html").read_bytes() == cat.render(0)
    assert (target / "product" / "29.html").read_bytes() == cat.render(29)


def test_cli_rejects_invalid_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spiderfarm.demosite", "--pages", "0"],
        check=False,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "pages must be >= 1" in out.stderr
