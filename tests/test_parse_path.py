"""The page-parsing fast paths (issue 14) give exactly what the plain way gives: a UTF-8
page handed to lxml as bytes has the tree parsel builds from the decoded text, and the
same ``encoding``; the ``<base href>`` read from the tree is the one the XPath finds;
the selectors' lighter result objects select, extract and chain as parsel's do."""

from __future__ import annotations

import pytest
from lxml import etree
from parsel import Selector as ParselSelector

from spiderfarm.http import HtmlResponse, Request, TextResponse
from spiderfarm.response import _utf8_as_is
from tests.corpus import CORPUS, CorpusSet, CorpusUnavailable, iter_pages

PAGE = "<html><head><title>T</title></head><body><p>{}</p></body></html>"

#: (Content-Type, body): the odd pages, each through both ways.
ODD: list[tuple[str, bytes]] = [
    ("text/html; charset=utf-8", PAGE.format("caf\u00e9 \u2014 \U0001f600").encode()),
    ("text/html", PAGE.format("plain ascii").encode()),
    ("text/html", b""),
    ("text/html", b"   \n\t "),
    ("text/html", b"\x0b\x0c" + PAGE.format("vt ff").encode() + b"\r\n"),
    ("text/html; charset=utf-8", PAGE.format("x").encode() + b"\xff"),  # invalid byte
    ("text/html; charset=utf-8", PAGE.format("\xff").encode("latin-1")),
    ("text/html; charset=utf-8", PAGE.format("").encode().replace(b"<p>", b"<p>\xc0\xaf")),
    ("text/html; charset=utf-8", PAGE.encode().replace(b"{}", b"\xed\xa0\x80 surrogate")),
    ("text/html; charset=utf-8", PAGE.encode().replace(b"{}", b"\xf4\x90\x80\x80 >U+10FFFF")),
    ("text/html; charset=utf-8", PAGE.encode().replace(b"{}", b"cut \xe2\x82")),
    ("text/html; charset=utf-8", b"\xc2\xa0" + PAGE.format("nbsp first").encode()),
    ("text/html; charset=utf-8", PAGE.format("nbsp last").encode() + b"\xc2\xa0"),
    ("text/html; charset=utf-8", PAGE.format("fs last").encode() + b"\x1c"),
    ("text/html; charset=utf-8", b"\x1f" + PAGE.format("us first").encode()),
    ("text/html; charset=utf-8", b"\xe3\x80\x80" + PAGE.format("ideographic").encode()),
    ("text/html", PAGE.format("nul \x00 here").encode()),
    ("text/html", b"\xef\xbb\xbf" + PAGE.format("bom").encode()),
    ("text/html", b"\xff\xfe" + PAGE.format("utf16").encode("utf-16-le")),
    ("text/html", b'<meta charset="latin-1">' + PAGE.format("\xe9t\xe9").encode("latin-1")),
    ("text/html; charset=utf-8", b'<meta charset="latin-1">' + PAGE.format("\u00e9").encode()),
    ("text/html; charset=iso-8859-1", PAGE.format("\xe9").encode("latin-1")),
    ("text/html; charset=bogus", PAGE.format("bogus charset").encode()),
    ("text/html", b'<meta charset="utf-16">' + PAGE.format("says utf-16").encode()),
    ("text/html", b'<meta charset="UTF8">' + PAGE.format("says UTF8").encode()),
    ("text/html", b'<?xml version="1.0"?>' + PAGE.format("xhtml").encode()),
    ("text/plain; charset=utf-8", b"just text, <b>bold</b>"),
]


def _the_plain_way(response: TextResponse) -> tuple[bytes, str]:
    """The tree and encoding as before the fast path: parsel on the decoded text."""
    url, body = response.url, response.body
    fresh = type(response)(url, 200, response.headers, body, Request(url))
    text = fresh.text
    sel = ParselSelector(text=text, type="html", base_url=fresh.url)
    return etree.tostring(sel.root, encoding="utf-8"), fresh.encoding


def _both_ways(content_type: str, body: bytes, url: str = "http://a.test/p.html") -> None:
    kind = TextResponse if content_type.startswith("text/plain") else HtmlResponse
    response = kind(url, 200, {"Content-Type": content_type}, body, Request(url))
    tree = etree.tostring(response.selector.root, encoding="utf-8")
    want_tree, want_encoding = _the_plain_way(response)
    assert tree == want_tree, (content_type, body[:80])
    assert response.encoding == want_encoding, (content_type, body[:80])
    # .text after the fast path is the text the plain way decoded
    fresh = kind(url, 200, {"Content-Type": content_type}, body, Request(url))
    assert response.text == fresh.text


@pytest.mark.parametrize(("content_type", "body"), ODD, ids=range(len(ODD)))
def test_utf8_pages_parse_from_bytes_to_the_plain_way_tree(content_type: str, body: bytes) -> None:
    _both_ways(content_type, body)


def test_the_fast_path_is_taken_only_where_it_is_exact() -> None:
    utf8 = PAGE.format("x").encode()
    assert _utf8_as_is("text/html; charset=utf-8", utf8) == "utf-8"
    assert _utf8_as_is("text/html", utf8) == "utf8"  # w3lib's name for its default
    assert _utf8_as_is("text/html", b'<meta charset="UTF8">' + utf8) == "utf-8"
    for content_type, body in [
        ("text/html", b"\xef\xbb\xbf" + utf8),  # a BOM
        ("text/html", utf8.replace(b"x", b"\x00")),  # NUL: replaced when decoded
        ("text/html; charset=iso-8859-1", utf8),
        ("text/html", b'<meta charset="utf-16">' + utf8),
        ("text/html; charset=utf-8", b"\xc2\xa0" + utf8),  # str.strip() takes a NBSP
        ("text/html; charset=utf-8", utf8 + b"\x1e"),  # ... and \x1e
        ("text/html", b""),
    ]:
        assert _utf8_as_is(content_type, body) is None, body[:40]


def _corpus(corpus_set: CorpusSet) -> list[tuple[str, bytes]]:
    try:
        return list(iter_pages(corpus_set))
    except CorpusUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("corpus_set", CORPUS, ids=lambda s: s.name)
def test_every_corpus_page_parses_from_bytes_to_the_plain_way_tree(corpus_set: CorpusSet) -> None:
    pages = _corpus(corpus_set)
    for path, body in pages:
        _both_ways("text/html", body, "http://127.0.0.1:8000" + path)
    assert len(pages) >= corpus_set.pages


BASE_PAGES = [
    (b"<html><head><base href='/b/'><title>t</title></head></html>", "http://a.test/b/"),
    (b"<html><head><base target=_top><base href='/2/'></head></html>", "http://a.test/2/"),
    (b"<html><body><p>late</p><base href='/late/'></body></html>", "http://a.test/late/"),
    (b"<html><head><BASE HREF=' /up/ '></head></html>", "http://a.test/up/"),
    (b"<html><head><base></head></html>", "http://a.test/d/p.html"),
    (
        b"<html><head><title>&lt;base href='/no/'&gt;</title></head></html>",
        "http://a.test/d/p.html",
    ),
    (b"<html><head><!-- <base href='/no/'> --></head></html>", "http://a.test/d/p.html"),
    (b"<html><head><base href='http://[::1'></head></html>", "http://a.test/d/p.html"),
    (b"<html><head></head><body>no base at all</body></html>", "http://a.test/d/p.html"),
]


@pytest.mark.parametrize(("body", "base"), BASE_PAGES, ids=range(len(BASE_PAGES)))
@pytest.mark.parametrize("parsed_first", [True, False], ids=["parsed", "unparsed"])
def test_base_href_from_the_tree_is_the_xpath_one(
    body: bytes, base: str, parsed_first: bool
) -> None:
    url = "http://a.test/d/p.html"
    response = HtmlResponse(url, 200, {"Content-Type": "text/html"}, body, Request(url))
    if parsed_first:
        response.selector.root  # noqa: B018 - the tree exists before base_url is asked
    assert response.base_url == base


QUERIES = [
    ("css", "a::attr(href)"), ("css", "title::text"), ("css", "a"), ("css", "div p"),
    ("css", "*::text"), ("css", "a.reference::attr(class)"), ("css", "nothing-here"),
    ("xpath", "//a/@href"), ("xpath", "count(//a)"), ("xpath", "string(//title)"),
    ("xpath", "boolean(//a)"), ("xpath", "//a[1]/text()"), ("xpath", "//comment()"),
    ("xpath", "//a/@href | //link/@href"), ("xpath", "name(/*)"), ("xpath", "//a[@href=$h]"),
    ("xpath", "//*[re:test(@href, '^https?:')]/@href"), ("xpath", "//processing-instruction()"),
]  # fmt: skip


def _described(result: object) -> object:
    """A selector list as plain data: each result's type, serialisation and root kind."""
    from parsel import SelectorList

    assert isinstance(result, SelectorList)
    return [(s.type, type(s.root).__name__, s.get(), s.extract(), s._expr) for s in result]


def _select(sel: object, how: str, query: str) -> object:
    if how == "css":
        return sel.css(query)  # type: ignore[attr-defined]
    return sel.xpath(query, h="#")  # type: ignore[attr-defined]


@pytest.mark.parametrize("corpus_set", CORPUS, ids=lambda s: s.name)
def test_selector_results_equal_parsels_on_the_corpus(corpus_set: CorpusSet) -> None:
    from spiderfarm import Selector

    for _, body in _corpus(corpus_set)[:40]:
        ours = Selector(body=body, type="html")
        theirs = ParselSelector(body=body, type="html")
        for how, query in QUERIES:
            got, want = _select(ours, how, query), _select(theirs, how, query)
            assert _described(got) == _described(want), query
            assert all(type(s) is Selector for s in got)  # type: ignore[attr-defined]
        # chained: from an element, a string, a number
        for a, b in zip(ours.css("a")[:30], theirs.css("a")[:30], strict=True):
            assert _described(a.css("::attr(href)")) == _described(b.css("::attr(href)"))
            assert _described(a.xpath("./text()")) == _described(b.xpath("./text()"))
            assert a.attrib == b.attrib and a.get() == b.get()
        hrefs = zip(ours.css("a::attr(href)")[:10], theirs.css("a::attr(href)")[:10], strict=True)
        for s, t in hrefs:
            assert _described(s.xpath(".")) == _described(t.xpath("."))
            assert _described(s.css("a")) == _described(t.css("a"))
        assert ours.css("a::attr(href)").re(r"(\w+)\.html") == theirs.css("a::attr(href)").re(
            r"(\w+)\.html"
        )


def test_selector_results_equal_parsels_on_xml_with_namespaces() -> None:
    from spiderfarm import Selector

    xml = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:m="urn:m"><entry><link href="/a"/><m:x>1</m:x></entry>'
        "<entry><link href='/b'/><m:x>2</m:x></entry></feed>"
    )
    ours, theirs = Selector(text=xml, type="xml"), ParselSelector(text=xml, type="xml")
    for sel in (ours, theirs):
        sel.register_namespace("a", "http://www.w3.org/2005/Atom")
    ns = {"m": "urn:m"}
    for query in ("//a:link/@href", "//m:x/text()", "//a:entry", "count(//a:entry)"):
        got, want = ours.xpath(query, namespaces=ns), theirs.xpath(query, namespaces=ns)
        assert _described(got) == _described(want), query
    entry = ours.xpath("//a:entry")[0]
    assert entry.namespaces == theirs.xpath("//a:entry")[0].namespaces
    assert entry.xpath("./a:link/@href").get() == "/a"  # the registered prefix is inherited
    with pytest.raises(ValueError, match="XPath error"):
        ours.xpath("//m:x")  # not registered on the selector itself
    with pytest.raises(ValueError, match="XPath error"):
        ours.xpath("//a[")
    json_sel = Selector(text='{"a": [1, 2]}')
    assert json_sel.jmespath("a").getall() == [1, 2]
    with pytest.raises(ValueError, match="Cannot use xpath on a Selector of type 'json'"):
        json_sel.xpath("//a")


def test_responses_and_loaders_hand_out_spiderfarms_selector() -> None:
    from spiderfarm import Selector
    from spiderfarm.loader import ItemLoader

    url = "http://a.test/"
    r = HtmlResponse(url, 200, {}, b"<html><title>t</title><a href='/x'>x</a></html>", Request(url))
    assert type(r.selector) is Selector
    assert type(r.css("a")[0]) is Selector
    assert ItemLoader(response=r).selector is r.selector
    import parsel

    class Parsel(ItemLoader):
        default_selector_class = parsel.Selector

    assert Parsel(response=r).selector is r.selector  # parsel's own class: not parsed again


FOLLOW_CSS = [
    "a", "A", "a.reference", "a.reference.internal", "div a", "div > a[href]", "a:not(.headerlink)",
    "a[href^='#']", "li:first-child a", "link", "link[rel=stylesheet]", "a, link", "*", "a *",
    "a::attr(href)", "p", "[href]",
]  # fmt: skip


@pytest.mark.parametrize("corpus_set", CORPUS, ids=lambda s: s.name)
def test_follow_all_reads_hrefs_as_the_element_way_does(corpus_set: CorpusSet) -> None:
    """follow_all(css=...) on a query that selects only <a> (or <link>) reads the hrefs
    with one XPath; the requests are those made from the elements parsel selects."""
    from spiderfarm.response import _compiled_hrefs

    assert _compiled_hrefs("a.reference", {}) is not None
    assert _compiled_hrefs("a, link", {}) is None and _compiled_hrefs("a::text", {}) is None
    links = 0
    for path, body in _corpus(corpus_set)[:60]:
        url = "http://127.0.0.1:8000" + path
        r = HtmlResponse(url, 200, {"Content-Type": "text/html"}, body, Request(url))
        for css in FOLLOW_CSS:
            try:
                want = [q.url for q in r.follow_all(r.css(css), callback="parse")]
            except ValueError as exc:  # a <p> or <div> cannot be followed, either way
                with pytest.raises(ValueError, match=str(exc)[:20]):
                    list(r.follow_all(css=css, callback="parse"))
                continue
            got = [q.url for q in r.follow_all(css=css, callback="parse")]
            assert got == want, (path, css)
            links += len(got)
    assert links > 1_000
