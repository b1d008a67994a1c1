"""Tests for the response kinds (issue 9): which class a fetched body becomes, how each
kind decodes and selects, what a binary response refuses, and that ``follow_all``'s fast
path finds exactly the links the selector finds on every kind. Ends with a real crawl of
a DocBook-style XHTML site served as ``text/html``."""

from __future__ import annotations

import codecs
import logging
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import spiderfarm.response as response_module
from spiderfarm import (
    HtmlResponse,
    InvalidRequest,
    JsonResponse,
    NotSupported,
    Request,
    Response,
    TextResponse,
    XmlResponse,
)
from spiderfarm.http import response_for
from spiderfarm.responsetypes import response_kind
from tests.farm import read_items, run_cli
from tests.linkcheck import assert_links_agree, link_disagreements, selector_links
from tests.sites import PNG_BYTES, XHTML_DOCS, xhtml_page

URL = "http://docs.test/manual/index.html"
BARE = "http://docs.test/manual/get"  # a URL whose name says nothing of its type

XHTML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">'
    "<head><title>Debian Reference</title>{head}</head>"
    '<body><div class="toc">{body}</div></body></html>\n'
)
LINKS = (
    '<a href="ch1.html">rel</a> <a href="/manual/ch2.html">root</a> '
    '<a href="//cdn.test/x.html">scheme-relative</a> <a href="https://other.test/y">abs</a> '
    '<a href="mailto:doc@docs.test">mail</a> <a href="javascript:void(0)">js</a> '
    '<a href="">empty</a> <a name="top">no href</a> <a href="  /spaced.html\n">spaced</a> '
    '<a href="?page=2">query</a> <a href="/p?a=1&amp;b=2">amp</a> '
    '<a href="http://docs.test:99999/">bad port</a> <a href="../up.html">up</a>'
)
# What follow_all(css="a") gives for LINKS from URL: mailto, javascript, empty, missing
# and invalid links dropped, the rest joined and made safe.
LINKS_FROM_URL = [
    "http://docs.test/manual/ch1.html",
    "http://docs.test/manual/ch2.html",
    "http://cdn.test/x.html",
    "https://other.test/y",
    "http://docs.test/spaced.html",
    "http://docs.test/manual/index.html?page=2",
    "http://docs.test/p?a=1&b=2",
    "http://docs.test/up.html",
]


def make(
    body: str | bytes,
    content_type: str | None = "text/html; charset=utf-8",
    url: str = URL,
    **headers: str,
) -> Response:
    """A response as the fetcher builds it (``response_for``), from these headers."""
    raw = body.encode() if isinstance(body, str) else body
    all_headers: dict[str, str] = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return response_for(url, 200, all_headers, raw, Request(url))


@pytest.fixture
def fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which kinds follow_all has already logged as having no links to select."""
    monkeypatch.setattr(response_module, "_TOLD_NO_LINKS", set())


# --- choosing the kind -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "cls"),
    [
        ("text/html", HtmlResponse),
        ("TEXT/HTML ; charset=ISO-8859-1", HtmlResponse),
        ("application/xhtml+xml", HtmlResponse),
        ("application/vnd.wap.xhtml+xml", HtmlResponse),
        ("text/xml", XmlResponse),
        ("application/xml", XmlResponse),
        ("application/rss+xml", XmlResponse),
        ("application/atom+xml; charset=utf-8", XmlResponse),
        ("application/rdf+xml", XmlResponse),
        ("image/svg+xml", XmlResponse),
        ("application/json", JsonResponse),
        ("application/x-json", JsonResponse),
        ("text/json", JsonResponse),
        ("application/ld+json", JsonResponse),
        ("application/vnd.api+json", JsonResponse),
        ("text/plain", TextResponse),
        ("text/css", TextResponse),
        ("text/csv", TextResponse),
        ("application/javascript", TextResponse),
        ("image/png", Response),
        ("application/pdf", Response),
        ("application/zip", Response),
        ("font/woff2", Response),
    ],
)
def test_the_content_type_decides(content_type: str, cls: type[Response]) -> None:
    # The body and URL say HTML: a declared type, even a binary one, wins over both.
    response = make("<html><body>x</body></html>", content_type, "http://docs.test/a.html")
    assert type(response) is cls


@pytest.mark.parametrize(
    ("headers", "url", "body", "cls"),
    [
        # No Content-Type, or octet-stream or nonsense: the name, then the body decides.
        ({}, BARE, b'<html lang="en"><title>t</title></html>', HtmlResponse),
        ({}, BARE, b"<!DOCTYPE html>\n<title>t</title>", HtmlResponse),
        ({}, BARE, XHTML.format(head="", body="").encode(), HtmlResponse),
        ({}, BARE, b'<?xml version="1.0"?><rss version="2.0"></rss>', XmlResponse),
        ({}, BARE, b"just some words\n", TextResponse),
        ({}, BARE, b"", TextResponse),
        ({}, BARE, PNG_BYTES, Response),
        ({"Content-Type": ""}, BARE, b"<html><p>x</p></html>", HtmlResponse),
        ({"Content-Type": "html"}, BARE, b"<html><p>x</p></html>", HtmlResponse),
        ({"Content-Type": "application/octet-stream"}, URL, b"<p>a fragment</p>", HtmlResponse),
        ({"Content-Type": "application/octet-stream"}, BARE, b"<p>a fragment</p>", TextResponse),
        ({"Content-Type": "binary/octet-stream"}, "http://d.test/a.xhtml", b"<p/>", HtmlResponse),
        ({"Content-Type": "application/octet-stream"}, "http://d.test/a.json", b"{}", JsonResponse),
        (
            {"Content-Type": "application/octet-stream"},
            "http://d.test/a.rss",
            b"<rss/>",
            XmlResponse,
        ),
        ({}, "http://d.test/page.HTML?x=1#top", b"<p>a fragment</p>", HtmlResponse),
        ({}, "http://d.test/feed.xml.gz", b"\x1f\x8b\x08\x00", Response),  # gzip, not XML
        ({}, "http://d.test/feed.xml.gz", b"<p>words</p>", TextResponse),
        ({}, "http://d.test/report.pdf", b"plain words", TextResponse),  # body decides
        (
            {
                "Content-Type": "application/octet-stream",
                "Content-Disposition": 'attachment; filename="chapter.xhtml"',
            },
            "http://d.test/download?id=3",
            b"<p>a fragment</p>",
            HtmlResponse,
        ),
        (
            {"Content-Disposition": "attachment; filename*=UTF-8''feed.atom"},
            "http://d.test/download",
            b"<feed/>",
            XmlResponse,
        ),
        (
            {"Content-Disposition": "attachment; filename=data.bin"},
            "http://d.test/download",
            b"<html><p>x</p></html>",
            HtmlResponse,
        ),
    ],
)
def test_without_a_usable_content_type_the_name_then_the_body_decide(
    headers: Mapping[str, str], url: str, body: bytes, cls: type[Response]
) -> None:
    assert type(response_for(url, 200, headers, body, Request(url))) is cls


def test_response_on_the_base_class_picks_the_kind_and_a_subclass_is_kept() -> None:
    request = Request(URL)
    html = Response(URL, 200, {"Content-Type": "text/html"}, b"<p>x</p>", request)
    assert type(html) is HtmlResponse
    assert html.css("p::text").get() == "x"  # as Response(...) did before the kinds
    png = Response(URL, 200, {"Content-Type": "image/png"}, PNG_BYTES, request)
    assert type(png) is Response
    forced = HtmlResponse(URL, 200, {"Content-Type": "image/png"}, b"<p>y</p>", request)
    assert type(forced) is HtmlResponse
    assert forced.css("p::text").get() == "y"


def test_the_kinds_are_scrapys_class_tree() -> None:
    for cls in (HtmlResponse, XmlResponse, JsonResponse):
        assert cls.__mro__[1:] == (TextResponse, Response, object)
    assert not issubclass(Response, TextResponse)
    png = make(PNG_BYTES, "image/png")
    assert isinstance(png, Response)
    assert not isinstance(png, TextResponse)
    assert isinstance(make("<p/>"), TextResponse)


def test_every_kind_keeps_slots() -> None:
    for response in (make("<p/>"), make(PNG_BYTES, "image/png"), make("{}", "text/json")):
        assert not hasattr(response, "__dict__")
        with pytest.raises(AttributeError):
            response.surprise = 1  # type: ignore[attr-defined]


def test_nothing_is_decoded_or_parsed_until_asked() -> None:
    response = make(XHTML.format(head="", body=LINKS))
    assert (response._text, response._selector) == (None, None)  # type: ignore[attr-defined]
    assert response.css("title::text").get() == "Debian Reference"
    # A UTF-8 page is parsed from its bytes: decoded only when .text is asked for.
    assert response._selector is not None  # type: ignore[attr-defined]
    assert response._text is None  # type: ignore[attr-defined]
    assert response.encoding == "utf-8"
    assert response._text is None  # type: ignore[attr-defined]
    assert "Debian Reference" in response.text


def test_choosing_the_kind_reads_headers_not_the_body_when_the_type_is_declared() -> None:
    class Untouchable(bytes):
        def __getitem__(self, key: object) -> bytes:
            raise AssertionError("the body was read")

    body = Untouchable(b"<p>x</p>")
    assert response_kind({"Content-Type": "text/html"}, URL, body) == "html"
    assert response_kind({"Content-Type": "image/png"}, URL, body) == "binary"


# --- HTML, XHTML and XML ---------------------------------------------------------------------


def test_xhtml_with_an_xml_declaration_served_as_html_finds_its_title_and_links() -> None:
    """The bug of issue 9: parsel took such a page for XML, so nothing matched."""
    url = "http://docs.test/manual/index.html"
    body = XHTML.format(head="", body=LINKS).encode()
    response = Response(url, 200, {"Content-Type": "text/html; charset=utf-8"}, body, Request(url))
    assert type(response) is HtmlResponse
    assert response.selector.type == "html"
    assert response.css("title::text").get() == "Debian Reference"
    assert response.xpath("//div[@class='toc']/a/@href").getall()[:2] == [
        "ch1.html",
        "/manual/ch2.html",
    ]
    assert [r.url for r in response.follow_all(css="a")] == LINKS_FROM_URL


def test_xhtml_base_href_is_honoured_when_served_as_html() -> None:
    response = make(XHTML.format(head='<base href="/manual/v2/" />', body=LINKS))
    assert response.base_url == "http://docs.test/manual/v2/"
    assert [r.url for r in response.follow_all(css="a")][:2] == [
        "http://docs.test/manual/v2/ch1.html",
        "http://docs.test/manual/ch2.html",
    ]


def test_served_as_application_xhtml_xml_it_is_html_too() -> None:
    response = make(XHTML.format(head="", body=LINKS), "application/xhtml+xml")
    assert type(response) is HtmlResponse
    assert response.css("title::text").get() == "Debian Reference"
    assert [r.url for r in response.follow_all(css="a")] == LINKS_FROM_URL


def test_xml_is_parsed_as_xml_and_honours_its_declared_encoding() -> None:
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        "<rss><channel><title>Caf\xe9 news</title>"
        "<item><link>http://docs.test/a</link></item>"
        "<item><link>http://docs.test/b</link></item></channel></rss>"
    ).encode("latin-1")
    response = make(body, "application/rss+xml")
    assert type(response) is XmlResponse
    assert response.selector.type == "xml"
    assert codecs.lookup(response.encoding).name == "cp1252"  # w3lib's latin-1
    assert response.css("channel > title::text").get() == "Café news"
    assert response.xpath("//item/link/text()").getall() == [
        "http://docs.test/a",
        "http://docs.test/b",
    ]
    links = response.follow_all(response.xpath("//item/link/text()").getall())
    assert [r.url for r in links] == ["http://docs.test/a", "http://docs.test/b"]


ATOM = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<feed xmlns="http://www.w3.org/2005/Atom"><title>Docs</title>'
    '<link href="/manual/" rel="alternate"/><link href="feed.atom" rel="self"/>'
    '<entry><title>One</title><link href="ch1.html"/></entry></feed>'
)
ATOM_LINKS = [
    "http://docs.test/manual/",
    "http://docs.test/manual/feed.atom",
    "http://docs.test/manual/ch1.html",
]


def test_an_atom_feed_keeps_its_namespace_as_in_scrapy() -> None:
    response = make(ATOM, "application/atom+xml")
    assert response.css("link") == []
    assert list(response.follow_all(css="link")) == []
    response.selector.register_namespace("atom", "http://www.w3.org/2005/Atom")
    assert [r.url for r in response.follow_all(xpath="//atom:link")] == ATOM_LINKS


def test_an_atom_feed_without_namespaces_follows_its_link_elements() -> None:
    response = make(ATOM, "application/atom+xml")
    response.selector.remove_namespaces()
    assert response.css("entry > title::text").get() == "One"
    assert [r.url for r in response.follow_all(css="link")] == ATOM_LINKS
    assert response.follow(response.css("entry link")[0]).url == ATOM_LINKS[2]


def test_plain_text_is_selected_as_html_as_in_scrapy() -> None:
    response = make('see <a href="/readme.html">the readme</a>\n', "text/plain")
    assert type(response) is TextResponse
    assert response.selector.type == "html"
    assert response.css("a::text").get() == "the readme"
    assert [r.url for r in response.follow_all(css="a")] == ["http://docs.test/readme.html"]


# --- JSON ------------------------------------------------------------------------------------


def test_json_has_json_and_a_json_selector() -> None:
    body = '{"items": [{"name": "café", "url": "/a"}, {"name": "b", "url": "/b"}]}'
    response = make(body.encode(), "application/json")
    assert type(response) is JsonResponse
    assert response.json() == {"items": [{"name": "café", "url": "/a"}, {"name": "b", "url": "/b"}]}
    assert response.selector.type == "json"
    assert response.jmespath("items[*].name").getall() == ["café", "b"]
    urls = response.jmespath("items[*].url").getall()
    assert [r.url for r in response.follow_all(urls)] == [
        "http://docs.test/a",
        "http://docs.test/b",
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "encoding"),
    [
        ('{"n": "café"}'.encode("latin-1"), "application/json; charset=iso-8859-1", "cp1252"),
        ('{"n": "café"}'.encode("utf-16"), "application/json", "utf-16-le"),
        ('{"n": "café"}'.encode("utf-8-sig"), "application/json; charset=latin-1", "utf-8"),
        ('{"n": "café"}'.encode(), "application/json", "utf-8"),
        ('{"n": "café"}'.encode(), "application/json; charset=rot13", "utf-8"),
        ('{"n": "café"}'.encode(), "application/json; charset=no-such", "utf-8"),
    ],
    ids=["charset", "bom-utf16", "bom-wins", "default-utf8", "non-text-codec", "unknown"],
)
def test_json_decodes_by_bom_then_charset_then_utf8(
    body: bytes, content_type: str, encoding: str
) -> None:
    response = make(body, content_type)
    assert response.json() == {"n": "café"}
    assert codecs.lookup(response.encoding).name == encoding


def test_json_ignores_a_meta_charset_in_its_strings() -> None:
    body = '{"html": "<meta charset=\\"iso-8859-1\\">", "n": "café"}'.encode()
    assert make(body, "application/json").json()["n"] == "café"


def test_css_and_xpath_on_json_raise_not_supported_naming_url_and_type() -> None:
    response = make("{}", "application/json; charset=utf-8")
    with pytest.raises(NotSupported) as info:
        response.css("a")
    assert str(info.value) == (
        f".css() is not supported: {URL} is a JSON response (Content-Type "
        "'application/json; charset=utf-8'); read it with .json() or .jmespath()"
    )
    with pytest.raises(NotSupported, match=r"^\.xpath\(\) is not supported"):
        response.xpath("//a")


# --- binary ----------------------------------------------------------------------------------


def test_a_binary_response_refuses_text_naming_its_url_and_type() -> None:
    url = "http://docs.test/manual/figure.png"
    response = make(PNG_BYTES, "image/png", url)
    with pytest.raises(NotSupported) as info:
        response.text  # noqa: B018
    assert str(info.value) == (
        f".text is not supported: {url} is a binary response (Content-Type 'image/png'); "
        "read .body, or check isinstance(response, TextResponse) first"
    )
    assert (info.value.url, info.value.content_type) == (url, "image/png")
    for action, call in [
        (".css()", lambda: response.css("a")),
        (".xpath()", lambda: response.xpath("//a")),
        (".selector", lambda: response.selector),
        (".encoding", lambda: response.encoding),
        (".json()", response.json),
    ]:
        with pytest.raises(NotSupported) as info:
            call()
        assert str(info.value).startswith(f"{action} is not supported: {url} is a binary")


def test_a_binary_response_keeps_its_body_and_joins_links_to_its_url() -> None:
    url = "http://docs.test/manual/img/figure.png"
    response = make(PNG_BYTES, "image/png", url)
    assert response.body == PNG_BYTES
    assert repr(response) == f"<200 {url}>"
    assert response.base_url == url
    assert response.urljoin("../ch1.html") == "http://docs.test/manual/ch1.html"
    assert response.follow("other.png", callback="parse").url == (
        "http://docs.test/manual/img/other.png"
    )
    assert [r.url for r in response.follow_all(["a.png", "/b.png", "mailto:x@y"])] == [
        "http://docs.test/manual/img/a.png",
        "http://docs.test/b.png",
    ]


def test_follow_all_css_on_binary_yields_nothing_and_logs_once_per_type(
    caplog: pytest.LogCaptureFixture, fresh_log_once: None
) -> None:
    with caplog.at_level(logging.WARNING, logger="spiderfarm.response"):
        for n in range(3):
            png = make(PNG_BYTES, "image/png", f"http://docs.test/{n}.png")
            assert list(png.follow_all(css="a")) == []
            assert list(png.follow_all(xpath="//a/@href")) == []
        pdf = make(b"%PDF-1.7\n\x01\x02", "application/pdf; qs=0.5", "http://docs.test/m.pdf")
        assert list(pdf.follow_all(css="a")) == []
        api = make('{"a": "<a href=/x>"}', "application/json", "http://docs.test/api")
        assert list(api.follow_all(css="a")) == []
        assert list(api.follow_all(css="a")) == []
    assert [r.getMessage() for r in caplog.records] == [
        "follow_all(css=...) follows nothing on http://docs.test/0.png: it is a binary "
        "response (Content-Type 'image/png'), with no HTML or XML to select links from; "
        "not logged again for binary responses of this type in this process",
        "follow_all(css=...) follows nothing on http://docs.test/m.pdf: it is a binary "
        "response (Content-Type 'application/pdf'), with no HTML or XML to select links "
        "from; not logged again for binary responses of this type in this process",
        "follow_all(css=...) follows nothing on http://docs.test/api: it is a JSON "
        "response (Content-Type 'application/json'), with no HTML or XML to select links "
        "from; not logged again for JSON responses of this type in this process",
    ]


def test_follow_all_on_binary_still_checks_its_arguments(fresh_log_once: None) -> None:
    png = make(PNG_BYTES, "image/png")
    with pytest.raises(InvalidRequest):
        png.follow_all(css="a", callback=lambda r: None)
    with pytest.raises(ValueError, match="exactly one of"):
        png.follow_all()


# --- follow_all agrees with the selector, on every kind ----------------------------------


def _atom_without_namespaces() -> Response:
    response = make(ATOM, "application/atom+xml")
    response.selector.remove_namespaces()
    return response


PAGES: dict[str, tuple[Response, type[Response], str, list[str]]] = {
    # name: (response, its class, the follow_all css, the links it must give)
    "html": (
        make(f"<!DOCTYPE html><html><head><title>t</title></head><body>{LINKS}</body></html>"),
        HtmlResponse,
        "a",
        LINKS_FROM_URL,
    ),
    "xhtml-prolog-as-html": (
        make(XHTML.format(head="", body=LINKS)),
        HtmlResponse,
        "a",
        LINKS_FROM_URL,
    ),
    "xhtml-prolog-base-as-html": (
        make(XHTML.format(head='<base href="http://mirror.test/m/" />', body=LINKS)),
        HtmlResponse,
        "a",
        [
            "http://mirror.test/m/ch1.html",
            "http://mirror.test/manual/ch2.html",
            "http://cdn.test/x.html",
            "https://other.test/y",
            "http://mirror.test/spaced.html",
            "http://mirror.test/m/?page=2",
            "http://mirror.test/p?a=1&b=2",
            "http://mirror.test/up.html",
        ],
    ),
    "application-xhtml+xml": (
        make(XHTML.format(head="", body=LINKS), "application/xhtml+xml"),
        HtmlResponse,
        "a",
        LINKS_FROM_URL,
    ),
    "xhtml-as-xml": (  # namespaced: css("a") finds nothing, the <base> still counts
        make(XHTML.format(head='<base href="/v2/"/>', body=LINKS), "application/xml"),
        XmlResponse,
        "a",
        [],
    ),
    "atom": (make(ATOM, "application/atom+xml"), XmlResponse, "link", []),
    "atom-no-namespaces": (_atom_without_namespaces(), XmlResponse, "link", ATOM_LINKS),
    "json": (
        make('{"html": "<base href=\\"/x/\\"><a href=\\"/y\\">y</a>"}', "application/json"),
        JsonResponse,
        "a",
        [],
    ),
    "text-plain": (
        make(f"notes <base href='/notes/'> {LINKS}", "text/plain"),
        TextResponse,
        "a, link",
        [
            "http://docs.test/notes/ch1.html",
            "http://docs.test/manual/ch2.html",
            "http://cdn.test/x.html",
            "https://other.test/y",
            "http://docs.test/spaced.html",
            "http://docs.test/notes/?page=2",
            "http://docs.test/p?a=1&b=2",
            "http://docs.test/up.html",
        ],
    ),
    "binary": (make(PNG_BYTES, "image/png"), Response, "a", []),
    "no-content-type-html": (
        make(f'<html lang="en"><body>{LINKS}</body></html>', None),
        HtmlResponse,
        "a",
        LINKS_FROM_URL,
    ),
    "octet-stream-html-url": (
        make(LINKS, "application/octet-stream", "http://docs.test/manual/page.html"),
        HtmlResponse,
        "a",
        [u.replace("index.html?", "page.html?") for u in LINKS_FROM_URL],
    ),
    "content-disposition": (
        make(
            XHTML.format(head="", body=LINKS),
            "application/octet-stream",
            "http://docs.test/get?id=3",
            Content_Disposition='attachment; filename="chapter.xhtml"',
        ),
        HtmlResponse,
        "a, link",
        [
            "http://docs.test/ch1.html",
            "http://docs.test/manual/ch2.html",
            "http://cdn.test/x.html",
            "https://other.test/y",
            "http://docs.test/spaced.html",
            "http://docs.test/get?page=2",
            "http://docs.test/p?a=1&b=2",
            "http://docs.test/up.html",
        ],
    ),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_follow_all_finds_what_the_selector_finds(name: str, fresh_log_once: None) -> None:
    response, cls, css, links = PAGES[name]
    assert type(response) is cls
    assert_links_agree(response, css)
    assert [r.url for r in response.follow_all(css=css)] == links
    assert selector_links(response, css) == links


@pytest.mark.parametrize(
    ("head", "base"),
    [
        ('<base href="/p?a=1&amp;b=2">', "http://docs.test/p?a=1&b=2"),  # unescaped
        ('<!-- <base href="/commented/"> -->', URL),
        ("<title>a &lt;base&gt; <base href='/in-title/'></title>", URL),
        ("<script>document.write('<base href=\"/js/\">')</script>", URL),
        ('<meta name="x" content="<base href=/in-attr/>">', URL),
        ('<base target="_top"><base href="/second/">', "http://docs.test/second/"),
        ('<base href=""><base href="/second/">', URL),  # the first href counts, empty or not
        ('<BASE HREF="/upper/">', "http://docs.test/upper/"),
        ('<base href=" /spaced/ ">', "http://docs.test/spaced/"),
        ('<base href="http://docs.test:99999/">', URL),
    ],
)
def test_base_url_is_what_the_parsed_page_declares(head: str, base: str) -> None:
    for body in (
        f"<html><head>{head}</head><body><a href='x.html'>x</a></body></html>",
        XHTML.format(head=head, body="<a href='x.html'>x</a>"),
    ):
        response = make(body)
        assert response.base_url == base
        assert link_disagreements(response) == []


def test_a_cdata_section_is_not_a_base_tag_in_xml() -> None:
    body = '<?xml version="1.0"?><r><d><![CDATA[<base href="/cdata/">]]></d><a href="x">x</a></r>'
    response = make(body, "text/xml")
    assert response.base_url == URL
    assert [r.url for r in response.follow_all(css="a")] == ["http://docs.test/manual/x"]
    assert link_disagreements(response) == []


def test_the_link_check_reports_a_disagreement() -> None:
    class Skewed(HtmlResponse):
        __slots__ = ()

        @property
        def base_url(self) -> str:
            return "http://elsewhere.test/"

    response = Skewed(URL, 200, {}, b"<a href='/a'>a</a>", Request(URL))
    problems = link_disagreements(response)
    assert problems == [
        f"{URL}: base_url 'http://elsewhere.test/', the tree says '{URL}'",
        f"{URL}: follow_all(css='a') gave 1 links, the selector 1; only follow_all: "
        "['http://elsewhere.test/a'], only the selector: ['http://docs.test/a']",
    ]
    with pytest.raises(AssertionError, match="elsewhere"):
        assert_links_agree(response)


def test_the_link_check_runs_over_saved_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.linkcheck import main

    (tmp_path / "sub").mkdir()
    for path, (title, head, body) in XHTML_DOCS.items():
        (tmp_path / path).write_bytes(xhtml_page(title, head, body))
    assert main(["--base", "http://docs.test/xhtml/", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "4 pages checked, 0 disagree\n"


# --- a real crawl ----------------------------------------------------------------------------

DOCS_SPIDER = """
from spiderfarm import Request, Spider


class Docs(Spider):
    name = "docs"
    base = ""

    def start_requests(self):
        yield Request(self.base + "xhtml/index.html")

    def parse(self, response):
        yield {
            "path": response.url.removeprefix(self.base),
            "title": response.css("title::text").get(),  # NotSupported on the PNG
            "links": len(list(response.follow_all(css="a"))),
        }
        yield from response.follow_all(css="a", callback=self.parse)
"""


@pytest.fixture
def docs_spider(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "docs.py"
    path.write_text(textwrap.dedent(DOCS_SPIDER))
    yield path


@pytest.mark.timeout(120)
def test_a_crawl_of_xhtml_served_as_html_finds_every_page(
    site: str, docs_spider: Path, tmp_path: Path
) -> None:
    out = tmp_path / "docs.jsonl"
    result = run_cli(
        ["crawl", str(docs_spider), "-a", f"base={site}", "-o", str(out), "--workers", "2"]
    )
    assert result.returncode == 0, result.stderr
    items = sorted(read_items(out), key=lambda i: str(i["path"]))
    assert items == [
        {"path": "xhtml/ch1.html", "title": "Chapter 1. GNU/Linux tutorials", "links": 2},
        {"path": "xhtml/ch2.html", "title": "Chapter 2. Debian package management", "links": 2},
        {"path": "xhtml/index.html", "title": "Debian Reference", "links": 4},
        {"path": "xhtml/sub/ch3.html", "title": "Chapter 3. The system initialization", "links": 2},
    ]
    # The PNG the index links to is fetched; its callback's .css() fails, is counted, and
    # the crawl goes on. ch3's links resolve through its <base href>: no 404.
    assert "crawl finished: 5 pages, 4 items, 1 errors" in result.stdout
    assert "errors/callback_error: 1" in result.stdout
    assert "http_404" not in result.stdout
    assert (
        result.stderr.count(
            f".css() is not supported: {site}xhtml/figure.png is a binary response "
            "(Content-Type 'image/png')"
        )
        == 1
    )
