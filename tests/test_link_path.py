"""The per-link fast paths (issue 14) give exactly what the plain way gives: the cached
``Response.urljoin`` equals ``urllib.parse.urljoin``, and ``follow_all`` requests the
URLs urljoin + safe_url make, on every link of the real-world corpus and on odd cases."""

from __future__ import annotations

import itertools
import random
from urllib.parse import urljoin, urlsplit

import pytest
from parsel import Selector

from spiderfarm.http import HtmlResponse, Request
from spiderfarm.urls import FETCHABLE_SCHEMES, safe_url
from tests.corpus import CORPUS, CorpusSet, CorpusUnavailable, iter_pages

HEADERS = {"Content-Type": "text/html; charset=utf-8"}

BASES = [
    "http://a.test/", "http://a.test/x", "http://a.test/x/", "http://a.test/x/y.html",
    "http://a.test/x/y.html?q=1", "http://a.test/x/y.html?q=1#top", "http://a.test/x/y#f",
    "http://a.test/x/z.html", "http://a.test/x/;p/y", "http://a.test/x/y;p?q",
    "http://a.test/x/y?", "http://a.test/x/y;", "http://a.test:8080/x/../y/z",
    "https://b.test/a/b/c/d", "https://b.test/a//b/c", "https://b.test/a/./b/", "http://a.test",
    "http://a.test?q", "http://a.test/x/y.html#",
]  # fmt: skip
HREFS = [
    "", "z.html", "z.html#s", "./z", "../z", "../../../z", "..", ".", "./", "../", "a/./b/../c",
    "a//b", "/r", "/r/../s", "//c.test/p", "//c.test", "//", "///x", "?k=v", "#frag", "#",
    "z?k#f", ";p", "z;p", "http://d.test/q?", "HTTP://d.test/Q", "https://e.test", "http:z",
    "http:/z", "http:///z", "https:z", "mailto:me@x.test", "javascript:void(0)", "a:b", "1a:b",
    "a/b:c", " z", "\tz", "z\ny", "\n#f", "#f\tg", "z ", "%7Ez", "é.html", "a b", "C:\\x",
    "?", "/?", "/#", "z#", "z?", "../z?q#f", "//c.test:80/p?q#f",
    "a?#f", "?q#f", " #f", "mailto:x#f", "//c.test#f", "z;#f", "z#f#g", "z #f ", "../z#%7E",
    "z#f\tg", "/r#f", "http://d.test#f", "z.html#\u00e9", "a/..#f", "#f#g", ";p#f",
    "z[1].html", "/r[1]", "z?a[]=1", "z#f[1]", "#g[2]", "//[::1]:8080/p", "z%zz#f%zz",
    "z?k='v'", "/r?k='v'", "it's.html", "#it's",
    "z.html#s?", "z.html#s;", "a/b#c/d?e", "z.#f", "z/#f", "..#f", "z%#f", "z.html#%zz",
    "z.html#it's", "z.html# f", "/r?q=1#f", "//c.test/p#f", "z~#f", "z-#f", "z_#f", "z;p#f",
    "z?#f", "/r#f[1]", "/r#f#g", "/r?q#f#g", "/" + "r" * 2066 + "#ffff", "z" * 2060 + "#ffffffff",
]  # fmt: skip


def response(
    url: str, body: bytes = b"<html></html>", request_url: str | None = None
) -> HtmlResponse:
    return HtmlResponse(url, 200, HEADERS, body, Request(request_url or url))


def followed_the_plain_way(response: HtmlResponse, hrefs: list[str]) -> list[str]:
    """What follow_all requested before its fast paths: urljoin, the scheme test,
    safe_url (a link that fails it skipped); fragment-only links to the page itself, which
    the farm would drop as duplicates, left out (when the page is the request's: an odd
    base such as "y?" is a page whose request URL w3lib made "y")."""
    urls = []
    itself = response.url == response.request.url
    for raw in hrefs:
        href = raw.strip()
        if not href or (itself and href.startswith("#")):
            continue
        try:
            absolute = urljoin(response.url, href)
            if urlsplit(absolute).scheme not in FETCHABLE_SCHEMES:
                continue
            urls.append(safe_url(absolute))
        except ValueError:
            continue
    return urls


def test_cached_urljoin_equals_urljoin_on_odd_bases_and_links() -> None:
    # Every order matters: a cache filled by one base must still answer another rightly.
    pairs = list(itertools.product(BASES, HREFS))
    for _ in range(3):
        random.Random(len(pairs)).shuffle(pairs)
        for base, href in pairs:
            assert response(base).urljoin(href) == urljoin(base, href), (base, href)


def test_follow_all_equals_the_plain_way_on_odd_links() -> None:
    page = "".join(f'<a href="{h}">x</a>' for h in HREFS if '"' not in h)
    body = f"<html><body>{page}</body></html>".encode()
    hrefs = Selector(text=body.decode()).css("a::attr(href)").getall()
    for base in BASES:
        r = response(base, body)
        got = [req.url for req in r.follow_all(css="a", callback="parse")]
        assert got == followed_the_plain_way(r, hrefs), base
        attrs = [req.url for req in r.follow_all(css="a::attr(href)")]
        assert attrs == got


def test_fragment_links_are_kept_when_the_page_is_not_its_request() -> None:
    body = b'<html><body><a href="#a">a</a><a href="#b">b</a><a href="c.html">c</a></body></html>'
    redirected = response("http://a.test/x/y.html", body, request_url="http://a.test/old")
    assert [r.url for r in redirected.follow_all(css="a")] == [
        "http://a.test/x/y.html#a", "http://a.test/x/y.html#b", "http://a.test/x/c.html"
    ]  # fmt: skip
    again = HtmlResponse(
        "http://a.test/x/y.html", 200, HEADERS, body,
        Request("http://a.test/x/y.html", dont_filter=True),
    )  # fmt: skip
    assert len(list(again.follow_all(css="a"))) == 3
    plain = response("http://a.test/x/y.html", body)
    assert [r.url for r in plain.follow_all(css="a")] == ["http://a.test/x/c.html"]


def _corpus_pages(corpus_set: CorpusSet) -> list[tuple[str, bytes]]:
    try:
        return list(iter_pages(corpus_set))
    except CorpusUnavailable as exc:
        pytest.skip(f"{corpus_set.package}: {exc}")


@pytest.mark.parametrize("corpus_set", CORPUS, ids=lambda s: s.name)
def test_every_link_of_the_real_world_corpus_joins_and_follows_as_before(
    corpus_set: CorpusSet,
) -> None:
    links = 0
    for path, body in _corpus_pages(corpus_set):
        url = "http://127.0.0.1:8000" + path
        r = response(url, body)
        hrefs = r.css("a::attr(href)").getall()
        links += len(hrefs)
        for href in hrefs:
            assert r.urljoin(href) == urljoin(r.base_url, href), (url, href)
        if r.base_url == url:  # no <base href>: the plain way joins with the page's URL
            got = [req.url for req in r.follow_all(css="a", callback="parse")]
            assert got == followed_the_plain_way(r, hrefs), url
    assert links > 1_000


def test_links_off_the_allowed_domains_are_dropped_on_the_worker_and_counted() -> None:
    from spiderfarm.protocol import join_notes, read_notes
    from spiderfarm.settings import Settings
    from spiderfarm.worker import Links, PageResult

    links = Links(Settings(), "s", allowed_domains=["a.test", ".b.test"])
    parent, result = Request("http://a.test/"), PageResult()
    for url in ["http://a.test/1", "http://x.a.test:8080/2", "https://b.test/3",
                "http://c.test/4", "http://a.test.evil/5", "http://c.test/6"]:  # fmt: skip
        links.add(Request(url), parent, result)
    assert [wire[0] for _, _, wire in result.requests] == [
        "http://a.test/1", "http://x.a.test:8080/2", "https://b.test/3"
    ]  # fmt: skip
    # The frontier adds the page's notes to its stats as if it had filtered them itself.
    assert list(read_notes(join_notes(result.notes))) == [("filtered/offsite", 3)]
    anywhere = Links(Settings(), "s")
    anywhere.add(Request("http://c.test/4"), parent, everything := PageResult())
    assert len(everything.requests) == 1 and everything.notes == []


def extracted_the_plain_way(response: HtmlResponse) -> list[tuple[str, str, bool]]:
    """What LinkExtractor() gave before its fast paths, as Scrapy's does it: for every
    <a>/<area> href, strip, urljoin with the base, safe_url_string, urljoin with the page,
    keep http(s) URLs safe_url accepts and whose path has no ignored extension; each URL
    once (first), with its text and nofollow."""
    from lxml import etree
    from w3lib.html import strip_html5_whitespace
    from w3lib.url import safe_url_string

    from spiderfarm.linkextractors import IGNORED_EXTENSIONS

    string = etree.XPath("string()")
    found: list[tuple[str, str, bool]] = []
    seen: set[str] = set()
    for el in response.selector.root.iter(etree.Element):
        if el.tag not in ("a", "area") or el.get("href") is None:
            continue
        try:
            url = urljoin(response.base_url, strip_html5_whitespace(el.get("href")))
            url = urljoin(response.url, safe_url_string(url, encoding=response.encoding))
            safe_url(url)
        except ValueError:
            continue
        path = urlsplit(url).path.lower()
        if urlsplit(url).scheme not in FETCHABLE_SCHEMES or any(
            path.endswith("." + ext) for ext in IGNORED_EXTENSIONS
        ):
            continue
        if url not in seen:
            seen.add(url)
            rel = (el.get("rel") or "").lower().replace(",", " ").split()
            found.append((url, str(string(el) or ""), "nofollow" in rel))
    return found


def _extracted(response: HtmlResponse, extractor: object) -> list[tuple[str, str, bool]]:
    links = extractor.extract_links(response)  # type: ignore[attr-defined]
    return [(link.url, link.text, link.nofollow) for link in links]


def test_link_extractor_equals_the_plain_way_on_odd_links() -> None:
    from spiderfarm.linkextractors import LinkExtractor

    extractor = LinkExtractor()
    page = "".join(f'<a href="{h}">t{i}</a>' for i, h in enumerate(HREFS) if '"' not in h)
    page += '<a href="x.PNG">img</a><a href="a.tar.gz">gz</a><area href="m.html" rel="NoFollow">'
    body = f"<html><body>{page}</body></html>".encode()
    for _ in range(2):  # the second time from the extractor's cache
        for base in BASES:
            r = response(base, body)
            assert _extracted(r, extractor) == extracted_the_plain_way(r), base


@pytest.mark.parametrize("corpus_set", CORPUS, ids=lambda s: s.name)
def test_link_extractor_equals_the_plain_way_on_the_corpus(corpus_set: CorpusSet) -> None:
    from spiderfarm.linkextractors import LinkExtractor

    extractor = LinkExtractor()
    links = 0
    for path, body in _corpus_pages(corpus_set):
        r = response("http://127.0.0.1:8000" + path, body)
        want = extracted_the_plain_way(r)
        assert _extracted(r, extractor) == want, path
        # CrawlSpider builds its requests on this: no URL needs safe_url again.
        assert all(safe_url(url) == url for url, _, _ in want), path
        links += len(want)
    assert links > 500


def test_link_text_is_the_xpath_string_value_of_the_element() -> None:
    from lxml import etree

    from spiderfarm.linkextractors import LinkExtractor

    inner = [
        "a<!-- c -->b<?pi x?>c<b>d<i>e</i></b>f", "<script>var a='<b>';</script>t",
        "&amp;&lt;&nbsp;&#x1F600;", "", "\n  spaced \t", "<svg><text>s</text></svg>",
        "<img alt=x>", "<span>one</span> <span>two</span>",
    ]  # fmt: skip
    body = "".join(f'<a href="/p{i}.html">{text}</a>tail{i}' for i, text in enumerate(inner))
    r = response("http://a.test/", f"<html><body>{body}</body></html>".encode())
    string = etree.XPath("string()")
    want = [str(string(el)) for el in r.selector.root.iter("a")]
    assert [link.text for link in LinkExtractor().extract_links(r)] == want
    assert want[0] == "abcdef" and want[-1] == "one two"


def test_a_fragment_of_a_sent_url_is_dropped_as_the_sent_one_is() -> None:
    from spiderfarm.settings import Settings
    from spiderfarm.worker import Links, PageResult

    links = Links(Settings(), "s")
    parent = Request("http://a.test/")
    sent = PageResult()
    for url in ["http://a.test/x", "http://a.test/x#one", "http://a.test/x#two"]:
        links.add(Request(url), parent, sent)
    assert [wire[0] for _, _, wire in sent.requests] == ["http://a.test/x"]
    later = PageResult()
    links.add(Request("http://a.test/y#a"), parent, later)  # the fragment spelling first
    links.add(Request("http://a.test/y"), parent, later)
    links.add(Request("http://a.test/y#b"), parent, later)
    # not the same request: a POST, one that says dont_filter, one closer to the start
    links.add(Request("http://a.test/x#p", method="POST", body=b"q"), parent, later)
    links.add(Request("http://a.test/x#d", dont_filter=True), parent, later)
    links.add(Request("http://a.test/x#c"), parent, later, depth=0)
    assert [wire[0] for _, _, wire in later.requests] == [
        "http://a.test/y#a", "http://a.test/x#p", "http://a.test/x#d", "http://a.test/x#c"
    ]  # fmt: skip


def test_links_to_one_page_at_many_anchors_are_cached_once() -> None:
    """Sphinx pages link to a few pages at hundreds of anchors: the join and the checks
    are made once per page linked ("api.html"), not once per anchor, by follow_all and
    by LinkExtractor; the URLs keep their fragments."""
    from spiderfarm import response as response_module
    from spiderfarm.linkextractors import LinkExtractor

    anchors = [f"api{n % 3}.html#sec-{n}" for n in range(300)]
    body = "".join(f'<a href="{h}">x</a>' for h in anchors).encode()
    page = response("http://a.test/docs/index.html", body)
    response_module._FOLLOWED.clear()
    urls = [r.url for r in page.follow_all(css="a")]
    assert urls == [f"http://a.test/docs/{h}" for h in anchors]
    assert len(response_module._FOLLOWED) == 3
    extractor = LinkExtractor()
    assert [link.url for link in extractor.extract_links(page)] == urls
    assert len(extractor._urls) == 3
