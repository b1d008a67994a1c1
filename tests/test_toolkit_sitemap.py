"""Sitemaps (``spiderfarm.sitemaps``), ``SitemapSpider``, ``XMLFeedSpider`` and
``CSVFeedSpider`` (issue 13): the parser's safety, robots.txt ``Sitemap:`` lines, capped
gunzip, and Scrapy-idiom spiders crawling the generated toolkit site on a farm."""

from __future__ import annotations

import gzip
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from spiderfarm import Request, Response, SpiderLoadError, TextResponse, XmlResponse
from spiderfarm.sitemaps import (
    DecompressedTooLarge,
    Sitemap,
    gunzip,
    is_gzip,
    sitemap_urls_from_robots,
)
from spiderfarm.spiders import CSVFeedSpider, SitemapSpider, XMLFeedSpider
from spiderfarm.start import apply_spider_state, spider_state
from tests.farm import read_items, run_cli
from tests.sites import HITS, ThreadedSites
from tests.toolkit_site import (
    BLOG_POSTS,
    CSV_ROWS,
    FEED_ITEMS,
    FRESH_PRODUCTS,
    PRODUCTS,
    make_toolkit_app,
)

pytestmark = pytest.mark.timeout(180)

SCRAPY_SPIDERS = Path(__file__).parent / "scrapy_spiders"
NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
XHTML_NS = 'xmlns:xhtml="http://www.w3.org/1999/xhtml"'

URLSET = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment --><?pi ignored?>
<urlset {NS} {XHTML_NS}>
  <url><loc> http://s.test/a </loc><lastmod>2024-01-02</lastmod><priority>0.8</priority>
    <xhtml:link rel="alternate" hreflang="de" href="http://s.test/de/a"/>
    <xhtml:link rel="alternate" hreflang="fr" href="http://s.test/fr/a"/></url>
  <url><lastmod>2024-01-02</lastmod></url>
  <url><loc>http://s.test/b</loc><changefreq>daily</changefreq></url>
</urlset>""".encode()


def xml(body: bytes, url: str = "http://s.test/sitemap.xml") -> XmlResponse:
    return XmlResponse(url, 200, {"Content-Type": "application/xml"}, body, Request(url))


# -- the parser ----------------------------------------------------------------------


def test_a_urlset() -> None:
    sitemap = Sitemap(URLSET)
    assert sitemap.type == "urlset"
    assert list(sitemap) == [
        {
            "loc": "http://s.test/a",
            "lastmod": "2024-01-02",
            "priority": "0.8",
            "alternate": ["http://s.test/de/a", "http://s.test/fr/a"],
        },
        {"loc": "http://s.test/b", "changefreq": "daily"},  # the entry without <loc> is gone
    ]


def test_a_sitemap_index_and_bodies_that_are_not_sitemaps() -> None:
    index = f"<sitemapindex {NS}><sitemap><loc>http://s.test/1.xml</loc></sitemap></sitemapindex>"
    sitemap = Sitemap(index.encode())
    assert (sitemap.type, list(sitemap)) == ("sitemapindex", [{"loc": "http://s.test/1.xml"}])
    assert Sitemap(b"<html><body>no</body></html>").type == "html"
    assert Sitemap(b"").type == ""
    assert Sitemap(b"not xml at all").type == ""
    # Broken XML is read as far as it goes (recover), as Scrapy's parser does; the spider
    # then skips a loc that is no URL.
    broken = f"<urlset {NS}><url><loc>http://s.test/ok</loc></url><url><loc>x</lo".encode()
    assert [e["loc"] for e in Sitemap(broken)] == ["http://s.test/ok", "x"]


def test_entities_are_never_expanded_nor_files_read(tmp_path: Path) -> None:
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY l0 "lol">{laughs}]>'
        f"<urlset {NS}><url><loc>&l9;</loc></url><url><loc>http://s.test/after</loc></url>"
        "</urlset>"
    ).encode()
    started = time.monotonic()
    # libxml2 before 2.14 refuses the amplification at the DTD (nothing is read); 2.14
    # (lxml 6.2) gives the first entry with the reference unexpanded, then stops there.
    expected = [] if etree.LIBXML_VERSION < (2, 14) else [{"loc": ""}]
    assert list(Sitemap(bomb)) == expected
    assert time.monotonic() - started < 1
    secret = tmp_path / "secret.txt"
    secret.write_text("http://s.test/SECRET")
    external = (
        f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY x SYSTEM "file://{secret}">]>'
        f"<urlset {NS}><url><loc>&x;</loc></url><url><loc>http://s.test/after</loc></url>"
        "</urlset>"
    ).encode()
    assert list(Sitemap(external)) == [{"loc": ""}, {"loc": "http://s.test/after"}]


def test_robots_sitemap_lines() -> None:
    robots = (
        "User-agent: *\nDisallow: /x\nSitemap: /relative.xml\n"
        "sitemap:http://a.test/lower.xml\n  SITEMAP : http://a.test/spaced.xml # note\n"
    )
    assert list(sitemap_urls_from_robots(robots, base_url="http://s.test/robots.txt")) == [
        "http://s.test/relative.xml",
        "http://a.test/lower.xml",
        "http://a.test/spaced.xml",
    ]


def test_gunzip_is_capped_and_forgiving() -> None:
    data = gzip.compress(b"x" * 100_000)
    assert is_gzip(data) and not is_gzip(b"<?xml")
    assert gunzip(data, 100_000) == b"x" * 100_000
    with pytest.raises(DecompressedTooLarge, match="decompressed body over 99999 bytes"):
        gunzip(data, 99_999)
    noise = random.Random(13).randbytes(300_000)  # incompressible: the cut loses little
    partial = gunzip(gzip.compress(noise)[:-5000], 10**7)
    assert 200_000 < len(partial) < 300_000 and noise.startswith(partial)
    with pytest.raises(ValueError, match="not a readable gzip stream"):
        gunzip(b"\x1f\x8b\x08garbage", 100)


# -- SitemapSpider -------------------------------------------------------------------


class Shop(SitemapSpider):
    name = "shop"
    sitemap_urls = ("http://s.test/robots.txt",)
    sitemap_rules = (("/de/", "parse_german"), ("", "parse"))
    sitemap_follow = (r"/keep",)

    def parse(self, response: Response) -> Any:
        return []

    def parse_german(self, response: Response) -> Any:
        return []


def made(spider: SitemapSpider, response: Response) -> list[tuple[str, str | None]]:
    return [(r.url, r.callback) for r in spider._parse_sitemap(response)]


def test_start_requests_robots_and_index() -> None:
    spider = Shop()
    assert [(r.url, r.callback) for r in spider.start_requests()] == [
        ("http://s.test/robots.txt", "_parse_sitemap")
    ]
    robots = TextResponse(
        "http://s.test/robots.txt",
        200,
        {"Content-Type": "text/plain"},
        b"Sitemap: /keep.xml\nSitemap: http://s.test/skip.xml\nSitemap: ftp://x/y\n",
        Request("http://s.test/robots.txt"),
    )
    # Every Sitemap: line is read (sitemap_follow is for indexes); unusable URLs skipped.
    assert made(spider, robots) == [
        ("http://s.test/keep.xml", "_parse_sitemap"),
        ("http://s.test/skip.xml", "_parse_sitemap"),
    ]
    index = (
        f"<sitemapindex {NS}><sitemap><loc>http://s.test/keep-1.xml</loc></sitemap>"
        "<sitemap><loc>http://s.test/other.xml</loc></sitemap></sitemapindex>"
    )
    assert made(spider, xml(index.encode())) == [("http://s.test/keep-1.xml", "_parse_sitemap")]


def test_urlsets_rules_alternates_filter_and_gzip() -> None:
    spider = Shop()
    assert made(spider, xml(URLSET)) == [("http://s.test/a", "parse"), ("http://s.test/b", "parse")]

    class Alternates(Shop):
        sitemap_alternate_links = True

        def sitemap_filter(self, entries: Any) -> Any:
            return (e for e in entries if "priority" in e)

    gzipped = Response(
        "http://s.test/s.xml.gz",
        200,
        {"Content-Type": "application/gzip"},
        gzip.compress(URLSET),
        Request("http://s.test/s.xml.gz"),
    )
    assert type(gzipped) is Response  # a binary response: decompressed by the spider
    assert made(Alternates(), gzipped) == [
        ("http://s.test/a", "parse"),
        ("http://s.test/de/a", "parse_german"),
        ("http://s.test/fr/a", "parse"),
    ]


def test_invalid_and_oversized_sitemaps_are_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spider = Shop()
    page = Response(
        "http://s.test/page",
        200,
        {"Content-Type": "text/html"},
        b"<html></html>",
        Request("http://s.test/page"),
    )
    bomb_body = gzip.compress(b" " * 2_000_000)
    bomb = Response(
        "http://s.test/b.xml.gz",
        200,
        {"Content-Type": "application/gzip"},
        bomb_body,
        Request("http://s.test/b.xml.gz", meta={"download_maxsize": 1_000_000}),
    )
    with caplog.at_level(logging.WARNING, logger="spiderfarm.spiders.sitemap"):
        assert made(spider, page) == []
        assert made(spider, bomb) == []
    assert [r.getMessage() for r in caplog.records] == [
        "Ignoring invalid sitemap: <200 http://s.test/page>",
        "Ignoring invalid sitemap: <200 http://s.test/b.xml.gz>: decompressed body over "
        "1000000 bytes (download_maxsize)",
    ]
    assert made(type("Big", (Shop,), {"download_maxsize": 3_000_000})(), bomb) == []


def test_sitemap_callbacks_travel_by_name() -> None:
    class Bad(SitemapSpider):
        name = "bad"
        sitemap_rules = (("", "parse_nothing"),)

    with pytest.raises(SpiderLoadError, match="sitemap_rules callback 'parse_nothing' is not"):
        Bad()

    class ByFunction(Shop):
        def parse_it(self, response: Response) -> Any:
            return []

        sitemap_rules = (("", parse_it),)

    spider = ByFunction(sitemap_urls="http://a.test/r.xml, http://b.test/s.xml")
    assert spider._cbs[0][1] == "parse_it"
    assert list(spider.sitemap_urls) == ["http://a.test/r.xml", "http://b.test/s.xml"]
    worker = ByFunction()
    apply_spider_state(worker, spider_state(spider))  # plain data: nothing left behind
    assert worker._cbs == spider._cbs and worker.sitemap_urls == spider.sitemap_urls


def test_a_scrapy_sitemap_spider_crawls_the_toolkit_site(tmp_path: Path) -> None:
    """``tests/scrapy_spiders/shop_sitemap.py`` from robots.txt: a sitemap index, a gzip
    file, a sitemap gzipped in transit, a gzip bomb past ``download_maxsize``, an entity
    bomb and an external entity; rules per pattern, alternate links, a lastmod filter."""
    out = tmp_path / "sitemap.jsonl"
    with ThreadedSites(make_toolkit_app()) as (site,):
        result = run_cli(
            ["crawl", "shop_sitemap", "--spiders-dir", str(SCRAPY_SPIDERS), "--workers", "2",
             "-a", f"sitemap_urls={site.url('/robots.txt')}", "-o", str(out)]
        )  # fmt: skip
        hits = [path for path, _, _ in site.app[HITS]]
        base = site.url("/").rstrip("/")
    assert result.returncode == 0, result.stdout + result.stderr
    products = [f"/product/{n}" for n in range(1, FRESH_PRODUCTS + 1)]
    products += [f"/de/product/{n}" for n in range(1, FRESH_PRODUCTS + 1)]
    posts = [f"/blog/{n}" for n in range(1, BLOG_POSTS + 1)] + ["/blog/after-the-entity"]
    items = read_items(out)
    got = sorted((i["kind"], str(i["url"]).removeprefix(base), i["title"]) for i in items)
    assert got == sorted(
        [("product", p, ("de " if p.startswith("/de/") else "") + f"product {p.rsplit('/')[-1]}")
         for p in products]
        + [("post", p, f"post {p.rsplit('/')[-1]}") for p in posts]
    )  # fmt: skip
    sitemaps = 7  # robots.txt, the index, products, blog, bomb, entities, external
    assert f"crawl finished: {sitemaps + len(got)} pages, {len(got)} items, 0 errors" in (
        result.stdout
    )
    # robots.txt is fetched twice: once by the frontier (robots rules), once as a page.
    assert hits.count("/robots.txt") == 2
    never = {"/sitemap-archive.xml", "/elsewhere/1", "/blog/after-the-laughs"}
    never |= {"/blog/from-the-bomb", "/blog/archived"}
    never |= {f"/product/{n}" for n in range(FRESH_PRODUCTS + 1, PRODUCTS + 1)}
    assert never.isdisjoint(hits)
    assert "decompressed body over 1048576 bytes" in result.stderr


# -- XMLFeedSpider and CSVFeedSpider -------------------------------------------------

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
<item><title>A</title><dc:creator>ann</dc:creator></item>
<item><title>B</title><dc:creator>bob</dc:creator></item>
</channel></rss>"""


@pytest.mark.parametrize("iterator", ["iternodes", "xml", "html"])
def test_xml_feed_iterators(iterator: str) -> None:
    class Feed(XMLFeedSpider):
        name = "feed"
        namespaces = (("dc", "http://purl.org/dc/elements/1.1/"),)

        def parse_node(self, response: Response, node: Any) -> Any:
            creator = node.xpath("dc:creator/text()" if iterator != "html" else "creator/text()")
            return {"title": node.xpath("title/text()").get(), "by": creator.get()}

    Feed.iterator = iterator  # type: ignore[assignment]
    values = list(Feed().parse(xml(RSS, url="http://s.test/feed.rss")))
    by = ["ann", "bob"] if iterator != "html" else [None, None]  # html drops namespaces' tags
    assert values == [{"title": "A", "by": by[0]}, {"title": "B", "by": by[1]}]


def test_xml_feed_prefixed_itertag_and_csv_rows() -> None:
    class Creators(XMLFeedSpider):
        name = "creators"
        itertag = "dc:creator"

        def parse_node(self, response: Response, node: Any) -> Any:
            return {"creator": node.xpath("text()").get()}

    assert list(Creators().parse(xml(RSS))) == [{"creator": "ann"}, {"creator": "bob"}]

    class Rows(CSVFeedSpider):
        name = "rows"

        def parse_row(self, response: Response, row: dict[str, str]) -> Any:
            return row

    body = b'sku,name\n1,"a, b"\n2\n3,c\n'
    response = TextResponse(
        "http://s.test/x.csv", 200, {"Content-Type": "text/csv"}, body, Request("http://s.test/")
    )
    assert list(Rows().parse(response)) == [{"sku": "1", "name": "a, b"}, {"sku": "3", "name": "c"}]


def test_scrapy_feed_spiders_crawl_the_toolkit_site(tmp_path: Path) -> None:
    with ThreadedSites(make_toolkit_app()) as (site,):
        rss, rows = tmp_path / "rss.jsonl", tmp_path / "csv.jsonl"
        for spider, path, out in (
            ("shop_rss", "/feed.rss", rss),
            ("shop_csv", "/products.csv", rows),
        ):
            result = run_cli(
                ["crawl", spider, "--spiders-dir", str(SCRAPY_SPIDERS), "--workers", "2",
                 "-a", f"start_urls={site.url(path)}", "-o", str(out)]
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            base = site.url("/").rstrip("/")
    assert sorted(read_items(rss), key=lambda i: int(str(i["link"]).rsplit("/", 1)[1])) == [
        {"title": f"Item {n} & more", "link": f"{base}/product/{n}", "creator": f"author {n % 3}"}
        for n in range(1, FEED_ITEMS + 1)
    ]
    assert sorted(read_items(rows), key=lambda i: str(i["sku"])) == [
        {"sku": f"sku-{n}", "name": f"Name; {n}", "price": n + 0.5} for n in range(1, CSV_ROWS + 1)
    ]
    assert "ignoring row 4 of" in result.stderr
