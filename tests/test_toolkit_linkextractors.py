"""``LinkExtractor`` and ``Link`` (issue 13): Scrapy's filters and defaults on crafted
pages, XHTML served as XML, and agreement with ``follow_all`` on every page of the
quotes site."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from spiderfarm import HtmlResponse, JsonResponse, Request, Response, TextResponse, XmlResponse
from spiderfarm.link import Link
from spiderfarm.linkextractors import IGNORED_EXTENSIONS, LinkExtractor

URL = "http://shop.test/cat/index.html"

PAGE = b"""<html><head><title>t</title></head><body>
<div id="nav">
  <a href="/about">About <b>us</b></a>
  <a href="page2.html" rel="Next NoFollow">Next</a>
  <a href="page2.html">Next again</a>
</div>
<div class="products">
  <a href="/p/1">One</a>
  <a href="http://cdn.shop.test/p/2">Two</a>
  <a href="https://other.test/p/3">Three</a>
  <a href="/files/manual.PDF">manual</a>
  <a href="/files/archive.tar.gz">archive</a>
  <a href="/p/1#reviews">reviews</a>
  <area href="/map" alt="map">
  <img src="/img/1.png">
</div>
<a href="mailto:sales@shop.test">mail</a>
<a href="javascript:goToPage('../js/page.html'); return false">js</a>
<a href="ftp://files.shop.test/x">ftp</a>
<a href="http://shop.test:99999/bad-port">bad port</a>
<a href="   /spaced\n">spaced</a>
<a name="anchor-only">no href</a>
</body></html>"""


def html(body: bytes = PAGE, url: str = URL, charset: str = "utf-8") -> HtmlResponse:
    headers = {"Content-Type": f"text/html; charset={charset}"}
    return HtmlResponse(url, 200, headers, body, Request(url))


def urls(extractor: LinkExtractor, response: Response) -> list[str]:
    return [link.url for link in extractor.extract_links(response)]


def test_defaults_follow_a_and_area_hrefs_once_and_skip_what_cannot_be_fetched() -> None:
    links = LinkExtractor().extract_links(html())
    assert links == [
        Link("http://shop.test/about", "About us"),
        Link("http://shop.test/cat/page2.html", "Next", nofollow=True),
        Link("http://shop.test/p/1", "One"),
        Link("http://cdn.shop.test/p/2", "Two"),
        Link("https://other.test/p/3", "Three"),
        Link("http://shop.test/p/1#reviews", "reviews"),  # a fragment is kept, as in Scrapy
        Link("http://shop.test/map", ""),
        Link("http://shop.test/spaced", "spaced"),
    ]


def test_unique_false_keeps_repeats() -> None:
    found = urls(LinkExtractor(unique=False), html())
    assert found.count("http://shop.test/cat/page2.html") == 2


def test_ignored_extensions_are_scrapys_and_compared_case_blind() -> None:
    assert "pdf" in IGNORED_EXTENSIONS and "tar.gz" in IGNORED_EXTENSIONS
    assert len(IGNORED_EXTENSIONS) == len(set(IGNORED_EXTENSIONS)) == 91
    everything = urls(LinkExtractor(deny_extensions=[]), html())
    assert "http://shop.test/files/manual.PDF" in everything
    assert "http://shop.test/files/archive.tar.gz" in everything
    only_pdf_denied = urls(LinkExtractor(deny_extensions="pdf"), html())
    assert "http://shop.test/files/manual.PDF" not in only_pdf_denied
    assert "http://shop.test/files/archive.tar.gz" in only_pdf_denied


def test_allow_and_deny_take_strings_lists_and_compiled_patterns() -> None:
    assert urls(LinkExtractor(allow=r"/p/\d+$"), html()) == [
        "http://shop.test/p/1",
        "http://cdn.shop.test/p/2",
        "https://other.test/p/3",
    ]
    denied = urls(LinkExtractor(allow=[r"/p/"], deny=re.compile(r"other|cdn")), html())
    assert denied == ["http://shop.test/p/1", "http://shop.test/p/1#reviews"]


def test_domains_match_subdomains_and_ignore_the_port() -> None:
    assert urls(LinkExtractor(allow_domains="other.test"), html()) == ["https://other.test/p/3"]
    assert urls(LinkExtractor(allow_domains=["shop.test"], allow="/p/"), html()) == [
        "http://shop.test/p/1",
        "http://cdn.shop.test/p/2",
        "http://shop.test/p/1#reviews",
    ]
    assert urls(LinkExtractor(deny_domains=["cdn.shop.test", "shop.test"]), html()) == [
        "https://other.test/p/3"
    ]
    on_a_port = html(b'<a href="/x">x</a>', url="http://127.0.0.1:8123/")
    assert urls(LinkExtractor(allow_domains="127.0.0.1"), on_a_port) == ["http://127.0.0.1:8123/x"]
    assert urls(LinkExtractor(allow_domains="127.0.0.1:8123"), on_a_port) == [
        "http://127.0.0.1:8123/x"
    ]


def test_restrict_css_and_xpaths_limit_the_regions() -> None:
    assert urls(LinkExtractor(restrict_css="#nav"), html()) == [
        "http://shop.test/about",
        "http://shop.test/cat/page2.html",
    ]
    both = LinkExtractor(restrict_xpaths="//div[@id='nav']", restrict_css="div.products")
    assert len(urls(both, html())) == 2 + 5  # the PDF and the archive are ignored
    # An XPath that selects text or attributes (not elements) has no links.
    assert urls(LinkExtractor(restrict_xpaths="//a/@href"), html()) == []


def test_restrict_text_matches_the_link_text() -> None:
    assert urls(LinkExtractor(restrict_text=r"^T"), html()) == [
        "http://cdn.shop.test/p/2",
        "https://other.test/p/3",
    ]


def test_tags_and_attrs_choose_what_is_read() -> None:
    assert urls(LinkExtractor(tags="img", attrs="src", deny_extensions=[]), html()) == [
        "http://shop.test/img/1.png"
    ]
    assert urls(LinkExtractor(tags="img", attrs="src"), html()) == []  # png is ignored
    any_tag = LinkExtractor(tags="*", attrs=("href", "src"), deny_tags="a", deny_extensions=[])
    assert urls(any_tag, html()) == ["http://shop.test/map", "http://shop.test/img/1.png"]
    # Every attribute of every tag: ids and classes are read as relative URLs too.
    every = urls(LinkExtractor(tags="*", attrs="*", deny_attrs="href"), html(b'<p id="x">'))
    assert every == ["http://shop.test/cat/x"]


def test_process_value_rewrites_or_drops_values() -> None:
    def from_javascript(value: str) -> str | None:
        match = re.search(r"goToPage\('(.*?)'", value)
        return match.group(1) if match else None

    assert urls(LinkExtractor(process_value=from_javascript), html()) == [
        "http://shop.test/js/page.html"
    ]


def test_canonicalize() -> None:
    page = b'<a href="/s?b=2&amp;a=1#top">s</a><a href=" /pad ">pad</a>'
    assert urls(LinkExtractor(canonicalize=True), html(page)) == [
        "http://shop.test/s?a=1&b=2",
        "http://shop.test/pad",
    ]
    assert urls(LinkExtractor(), html(page))[0] == "http://shop.test/s?b=2&a=1#top"


def test_base_href_and_the_page_encoding() -> None:
    page = '<base href="http://mirror.test/root/"><a href="p?q=caf\xe9">c</a>'.encode("cp1252")
    response = html(page, charset="cp1252")
    # The query is encoded in the page's encoding (as browsers do), the path in UTF-8.
    assert urls(LinkExtractor(), response) == ["http://mirror.test/root/p?q=caf%E9"]


def test_xhtml_served_as_xml_and_text_kinds() -> None:
    xhtml = (
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
        b'<a href="ch1.html">One</a><area href="/map"/></body></html>'
    )
    xml = XmlResponse(URL, 200, {"Content-Type": "application/xml"}, xhtml, Request(URL))
    assert [(k.url, k.text) for k in LinkExtractor().extract_links(xml)] == [
        ("http://shop.test/cat/ch1.html", "One"),
        ("http://shop.test/map", ""),
    ]
    text = TextResponse(
        URL, 200, {"Content-Type": "text/plain"}, b'<a href="/t">t</a>', Request(URL)
    )
    assert urls(LinkExtractor(), text) == ["http://shop.test/t"]
    data = JsonResponse(URL, 200, {"Content-Type": "application/json"}, b'{"a": 1}', Request(URL))
    binary = Response(URL, 200, {"Content-Type": "image/png"}, b"\x89PNG", Request(URL))
    assert urls(LinkExtractor(), data) == urls(LinkExtractor(), binary) == []


def test_matches() -> None:
    extractor = LinkExtractor(allow="/p/", deny="/p/9", allow_domains="shop.test")
    assert extractor.matches("http://shop.test/p/1")
    assert extractor.matches("http://www.shop.test/p/1")
    assert not extractor.matches("http://shop.test/p/99")
    assert not extractor.matches("http://other.test/p/1")
    assert not extractor.matches("http://shop.test/q")


def test_link_equality_hash_repr_and_pickle() -> None:
    link = Link("http://a.test/", "A", "frag", nofollow=True)
    assert link == Link("http://a.test/", "A", "frag", True)
    assert link != Link("http://a.test/", "A", "frag", False)
    assert len({link, Link("http://a.test/", "A", "frag", True)}) == 1
    assert repr(link) == ("Link(url='http://a.test/', text='A', fragment='frag', nofollow=True)")
    assert pickle.loads(pickle.dumps(link)) == link
    with pytest.raises(TypeError, match="Link urls must be str objects, got bytes"):
        Link(b"http://a.test/")  # type: ignore[arg-type]


def test_agrees_with_follow_all_on_every_quotes_page(shared_dir: Path) -> None:
    """On all 214 pages of the quotes site, the extractor (no extension filter, repeats
    kept) finds exactly the links ``follow_all(css="a")`` follows, in the same order."""
    root = shared_dir / "sites" / "quotes"
    extractor = LinkExtractor(tags="a", deny_extensions=[], unique=False)
    pages = sorted(root.rglob("index.html"))
    assert len(pages) == 214
    total = 0
    for path in pages:
        url = "http://127.0.0.1:8000/" + str(path.parent.relative_to(root)).strip(".") + "/"
        url = url.replace("//", "/").replace("http:/", "http://")
        response = html(path.read_bytes(), url=url)
        expected = [r.url for r in response.follow_all(css="a")]
        assert urls(extractor, response) == expected, url
        total += len(expected)
    assert total == 3978 + 428  # the ground truth's internal and external link instances
