"""Tests for spiderfarm.http: building, checking and shipping ``Request``s, and reading
``Response``s built directly from bytes (no network)."""

from __future__ import annotations

import codecs
import contextlib
import pickle
import random
from collections.abc import Iterator
from html import escape
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from spiderfarm import Spider
from spiderfarm.errors import SpiderfarmError
from spiderfarm.http import (
    HtmlResponse,
    InvalidRequest,
    Request,
    Response,
    current_spider,
    response_for,
)
from tests.linkcheck import is_self_link

PAGE_URL = "http://example.com/dir/page.html"


class ShopSpider(Spider):
    name = "shop"
    start_url = "http://example.com/"

    def parse_item(self, response: Response) -> None:
        pass

    def on_error(self, failure: Any) -> None:
        pass


class Other:
    def handle(self, response: Response) -> None:
        pass


def make_response(
    body: bytes | str,
    content_type: str | None = "text/html; charset=utf-8",
    url: str = PAGE_URL,
    status: int = 200,
) -> Response:
    if isinstance(body, str):
        body = body.encode()
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return response_for(url, status, headers, body, Request(url))


@pytest.fixture
def spider_in_context() -> Iterator[ShopSpider]:
    spider = ShopSpider()
    token = current_spider.set(spider)
    try:
        yield spider
    finally:
        current_spider.reset(token)


# --- Request: construction and validation -------------------------------------------------


def test_request_makes_its_url_safe() -> None:
    assert Request("  http://bücher.example/a b ").url == "http://xn--bcher-kva.example/a%20b"


def test_invalid_request_is_a_value_error_and_a_spiderfarm_error() -> None:
    assert issubclass(InvalidRequest, ValueError)
    assert issubclass(InvalidRequest, SpiderfarmError)


def test_request_with_a_bad_url_raises_invalid_request_with_the_url_message() -> None:
    with pytest.raises(InvalidRequest) as info:
        Request("example.com/page")
    assert str(info.value) == (
        "unsupported URL scheme '' in 'example.com/page' (missing scheme? write http://...); "
        "only http and https are fetched"
    )


def test_request_rejects_an_over_long_url() -> None:
    with pytest.raises(InvalidRequest, match=r"^URL is 2100 characters, over the 2083 limit"):
        Request("http://example.com/" + "a" * 2081)


def test_request_defaults() -> None:
    req = Request("http://example.com/")
    assert (req.url, req.callback, req.errback, req.method) == (
        "http://example.com/",
        None,
        None,
        "GET",
    )
    assert (req.headers, req.body, req.meta, req.cb_kwargs) == (None, None, None, None)
    assert (req.priority, req.dont_filter, req.depth) == (0, False, 0)
    assert repr(req) == "<GET http://example.com/>"


def test_request_upper_cases_the_method_and_encodes_a_str_body() -> None:
    req = Request("http://example.com/", method="post", body="é=1")
    assert req.method == "POST"
    assert req.body == b"\xc3\xa9=1"
    assert Request("http://example.com/", body=b"").body is None


@pytest.mark.parametrize("method", ["G ET", "", "GET\r\n", 5])
def test_request_rejects_a_bad_method(method: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        Request("http://example.com/", method=method)
    assert str(info.value) == f"invalid HTTP method {method!r} for http://example.com/"


def test_request_rejects_a_non_int_priority() -> None:
    with pytest.raises(InvalidRequest) as info:
        Request("http://example.com/", priority="1")  # type: ignore[arg-type]
    assert str(info.value) == "priority must be an int, got '1' for http://example.com/"


def test_bound_method_callbacks_travel_as_their_names() -> None:
    spider = ShopSpider()
    req = Request("http://example.com/", callback=spider.parse_item, errback=spider.on_error)
    assert (req.callback, req.errback) == ("parse_item", "on_error")


def test_a_callback_name_is_kept_as_given_when_no_spider_is_running() -> None:
    assert Request("http://example.com/", callback="anything").callback == "anything"


def test_a_callback_name_is_checked_against_the_current_spider(
    spider_in_context: ShopSpider,
) -> None:
    assert Request("http://example.com/", callback="parse_item").callback == "parse_item"
    with pytest.raises(InvalidRequest) as info:
        Request("http://example.com/", callback="parse_itme")
    assert str(info.value) == (
        "callback 'parse_itme' is not a method of spider 'shop'; "
        "define ShopSpider.parse_itme(self, response)"
    )


def test_an_errback_name_is_checked_against_the_current_spider(
    spider_in_context: ShopSpider,
) -> None:
    with pytest.raises(InvalidRequest, match=r"^errback 'oops' is not a method of spider 'shop'"):
        Request("http://example.com/", errback="oops")


def test_a_non_callable_spider_attribute_is_not_a_callback(
    spider_in_context: ShopSpider,
) -> None:
    with pytest.raises(InvalidRequest, match=r"^callback 'start_url' is not a method"):
        Request("http://example.com/", callback="start_url")


def test_a_method_of_another_object_is_checked_by_name_against_the_spider(
    spider_in_context: ShopSpider,
) -> None:
    with pytest.raises(InvalidRequest, match=r"^callback 'handle' is not a method of spider"):
        Request("http://example.com/", callback=Other().handle)


def _plain_function(response: Response) -> None:
    pass


@pytest.mark.parametrize(
    "callback",
    [lambda response: None, _plain_function, ShopSpider.parse_item, 5],
    ids=["lambda", "function", "unbound-method", "int"],
)
def test_functions_and_lambdas_are_rejected_as_callbacks(callback: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        Request("http://example.com/", callback=callback)
    assert str(info.value) == (
        "callback must be a method of the spider (self.parse_item) or its name, "
        f"got {callback!r}: functions and lambdas cannot travel between processes"
    )


def test_a_builtin_function_is_rejected_as_a_callback() -> None:
    # A builtin has a __self__ (its module) but is no bound method of a spider.
    with pytest.raises(InvalidRequest) as info:
        Request("http://example.com/", callback=len)
    assert str(info.value) == (
        "callback must be a method of the spider (self.parse_item) or its name, "
        f"got {len!r}: functions and lambdas cannot travel between processes"
    )


# --- Request: wire format and replace -----------------------------------------------------


def _full_request() -> Request:
    req = Request(
        "http://example.com/post",
        callback="parse_item",
        method="POST",
        headers={"X-Token": "t"},
        body=b"a=1",
        meta={"page": 2},
        priority=-3,
        dont_filter=True,
        cb_kwargs={"category": "books"},
        errback="on_error",
    )
    req.depth = 4
    return req


def test_to_wire_is_a_plain_tuple_in_field_order() -> None:
    assert _full_request().to_wire() == (
        "http://example.com/post",
        "parse_item",
        "POST",
        {"X-Token": "t"},
        b"a=1",
        {"page": 2},
        -3,
        True,
        {"category": "books"},
        4,
        "on_error",
    )


def test_to_wire_sends_empty_meta_and_cb_kwargs_as_none() -> None:
    wire = Request("http://example.com/", meta={}, cb_kwargs={}).to_wire()
    assert wire == ("http://example.com/", None, "GET", None, None, None, 0, False, None, 0, None)


def test_wire_round_trip_through_pickle_restores_every_field() -> None:
    original = _full_request()
    copy = Request.from_wire(pickle.loads(pickle.dumps(original.to_wire())))
    assert [getattr(copy, name) for name in Request.__slots__] == [
        getattr(original, name) for name in Request.__slots__
    ]
    assert copy.to_wire() == original.to_wire()


def test_replace_changes_only_the_given_fields_and_keeps_depth() -> None:
    original = _full_request()
    changed = original.replace(url="http://example.com/other", priority=7)
    assert changed.to_wire() == (
        "http://example.com/other",
        "parse_item",
        "POST",
        {"X-Token": "t"},
        b"a=1",
        {"page": 2},
        7,
        True,
        {"category": "books"},
        4,
        "on_error",
    )
    assert original.url == "http://example.com/post"
    assert original.priority == -3


def test_replace_validates_the_new_values() -> None:
    with pytest.raises(InvalidRequest, match=r"^unsupported URL scheme 'ftp'"):
        Request("http://example.com/").replace(url="ftp://example.com/")


def test_replace_gives_the_copy_its_own_meta() -> None:
    original = Request("http://example.com/", meta={"retries": 0})
    copy = original.replace(url="http://example.com/again")
    assert copy.meta is not None
    copy.meta["retries"] = 1
    assert original.meta == {"retries": 0}


# --- Response: decoding ---------------------------------------------------------------------


def _codec(name: str) -> str:
    return codecs.lookup(name).name


def test_http_charset_wins_over_the_meta_charset() -> None:
    body = '<meta charset="utf-8"><p>café</p>'.encode("latin-1")
    response = make_response(body, "text/html; charset=iso-8859-1")
    assert _codec(response.encoding) == "cp1252"
    assert response.text == '<meta charset="utf-8"><p>café</p>'


def test_meta_charset_is_used_when_http_gives_none() -> None:
    body = '<meta charset="iso-8859-1"><p>café</p>'.encode("latin-1")
    response = make_response(body, "text/html")
    assert _codec(response.encoding) == "cp1252"
    assert response.css("p::text").get() == "café"


def test_utf8_is_the_fallback_without_any_declared_charset() -> None:
    response = make_response("<p>café</p>".encode(), None)
    assert _codec(response.encoding) == "utf-8"
    assert response.text == "<p>café</p>"


def test_a_bom_wins_over_a_wrong_http_charset() -> None:
    response = make_response(codecs.BOM_UTF8 + "café".encode(), "text/html; charset=iso-8859-1")
    assert _codec(response.encoding) == "utf-8"
    assert response.text == "café"


def test_a_mislabelled_body_is_decoded_with_replacement_characters() -> None:
    response = make_response("café".encode("latin-1"), "text/html; charset=utf-8")
    assert response.text == "caf\ufffd"


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=bogus-charset", "text/html; charset=base64"]
)
def test_a_bogus_http_charset_falls_back_without_crashing(content_type: str) -> None:
    response = make_response("<p>café</p>".encode(), content_type)
    assert _codec(response.encoding) == "utf-8"
    assert response.text == "<p>café</p>"


def test_a_bogus_meta_charset_falls_back_without_crashing() -> None:
    response = make_response('<meta charset="bogus"><p>café</p>'.encode(), "text/html")
    assert _codec(response.encoding) == "utf-8"
    assert response.css("p::text").get() == "café"


@pytest.mark.parametrize("charset", ["base64", "rot13"])
def test_a_non_text_codec_in_meta_charset_falls_back_without_crashing(charset: str) -> None:
    response = make_response(f'<meta charset="{charset}"><p>café</p>'.encode(), "text/html")
    assert response.css("p::text").get() == "café"
    assert _codec(response.encoding) == "utf-8"


def test_nul_bytes_are_replaced_before_parsing() -> None:
    response = make_response(b"<p>a\x00b</p><p>c</p>")
    assert response.text == "<p>a\ufffdb</p><p>c</p>"
    assert response.css("p::text").getall() == ["a\ufffdb", "c"]


def test_response_repr_and_meta_shared_with_its_request() -> None:
    response = make_response("<p>x</p>", status=404)
    assert repr(response) == f"<404 {PAGE_URL}>"
    assert response.request.meta is None
    response.meta["seen"] = True
    assert response.request.meta == {"seen": True}
    assert response.cb_kwargs == {}


# --- Response: selectors, JSON, joining -----------------------------------------------------


def test_css_and_xpath_select_from_the_decoded_body() -> None:
    response = make_response("<ul><li>one</li><li class='x'>two</li></ul>")
    assert response.css("li::text").getall() == ["one", "two"]
    assert response.xpath("//li[@class=$c]/text()", c="x").getall() == ["two"]


def test_json_parses_the_body() -> None:
    response = make_response(b'{"a": [1, 2], "b": "\xc3\xa9"}', "application/json")
    assert response.json() == {"a": [1, 2], "b": "é"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"name": "café"}'.encode("latin-1"), "application/json; charset=iso-8859-1"),
        ('{"name": "café"}'.encode("utf-16"), "application/json; charset=utf-16"),
        ('{"name": "café"}'.encode("utf-8-sig"), "application/json"),
    ],
    ids=["latin1", "utf16", "utf8-bom"],
)
def test_json_decodes_the_body_as_text_does(body: bytes, content_type: str) -> None:
    assert make_response(body, content_type).json() == {"name": "café"}


def test_json_of_a_non_json_body_raises_value_error_naming_the_url() -> None:
    response = make_response("<html></html>")
    with pytest.raises(ValueError) as info:
        response.json()
    assert str(info.value) == (
        f"response from {PAGE_URL} is not JSON: Expecting value: line 1 column 1 (char 0)"
    )


def test_urljoin_resolves_against_the_page_url() -> None:
    response = make_response("")
    assert response.urljoin("other.html") == "http://example.com/dir/other.html"
    assert response.urljoin("/top") == "http://example.com/top"
    assert response.urljoin("//cdn.example.net/x") == "http://cdn.example.net/x"
    assert response.urljoin("https://else.org/") == "https://else.org/"


def test_links_resolve_against_the_base_href() -> None:
    response = make_response('<base href="http://cdn.example.net/root/"><a href="x.html">x</a>')
    assert response.base_url == "http://cdn.example.net/root/"
    assert response.urljoin("x.html") == "http://cdn.example.net/root/x.html"
    assert response.follow(response.css("a")[0]).url == "http://cdn.example.net/root/x.html"
    assert [r.url for r in response.follow_all(css="a")] == ["http://cdn.example.net/root/x.html"]


@pytest.mark.parametrize("tag", ["BASE HREF", "Base href"])
def test_the_base_tag_is_found_whatever_its_case(tag: str) -> None:
    response = make_response(f'<{tag}="http://cdn.example.net/root/"><a href="x.html">x</a>')
    assert response.base_url == "http://cdn.example.net/root/"
    assert response.urljoin("x.html") == "http://cdn.example.net/root/x.html"


def test_a_relative_base_href_resolves_against_the_page_url() -> None:
    response = make_response('<base href="/sub/"><a href="x.html">x</a>')
    assert response.base_url == "http://example.com/sub/"
    assert response.urljoin("x.html") == "http://example.com/sub/x.html"


def test_without_a_base_href_the_base_url_is_the_page_url() -> None:
    assert make_response("<p>no base here</p>").base_url == PAGE_URL


@pytest.mark.parametrize(
    "base",
    [
        "http://example.com:99999/",  # w3lib raises: port out of range
        "http://example.com:abc/",  # w3lib raises: port not a number
        "http://[zz/",  # w3lib raises: invalid IPv6 URL
        "http://bad_host!.example.com/",  # parses, fails safe_url
        "http://" + "a" * 70 + ".example.com/",  # a label over 63 characters
        "javascript:alert(1)",
    ],
)
def test_an_unusable_base_href_falls_back_to_the_page_url(base: str) -> None:
    response = make_response(f'<base href="{base}"><a href="/a">a</a><a href="b">b</a>')
    assert response.base_url == PAGE_URL
    assert response.urljoin("b") == "http://example.com/dir/b"
    assert response.follow("/a").url == "http://example.com/a"
    assert [r.url for r in response.follow_all(css="a")] == [
        "http://example.com/a",
        "http://example.com/dir/b",
    ]


# --- Response.follow ------------------------------------------------------------------------

LINKS = (
    '<a class="rel" href="../up.html">up</a>'
    '<a class="rel" href="same.html">same</a>'
    '<link rel="next" href="/page/2">'
    '<div class="box" data-href="/no">box</div>'
    '<a id="anchor">no href</a>'
)


def test_follow_a_string_is_relative_to_the_page() -> None:
    spider = ShopSpider()
    req = make_response("").follow("item/1.html", callback=spider.parse_item, priority=5)
    assert (req.url, req.callback, req.priority) == (
        "http://example.com/dir/item/1.html",
        "parse_item",
        5,
    )


def test_follow_an_a_selector_and_a_link_selector() -> None:
    response = make_response(LINKS)
    assert response.follow(response.css("a.rel")[0]).url == "http://example.com/up.html"
    assert response.follow(response.css("link")[0]).url == "http://example.com/page/2"


def test_follow_an_attribute_selector() -> None:
    response = make_response(LINKS)
    assert response.follow(response.css("a.rel::attr(href)")[1]).url == (
        "http://example.com/dir/same.html"
    )
    assert response.follow(response.xpath("//link/@href")[0]).url == ("http://example.com/page/2")


def test_follow_strips_whitespace_around_an_href() -> None:
    response = make_response('<a href="  /spaced.html\n">s</a>')
    assert response.follow(response.css("a")[0]).url == "http://example.com/spaced.html"


def test_follow_a_non_link_selector_raises_value_error() -> None:
    response = make_response(LINKS)
    with pytest.raises(ValueError) as info:
        response.follow(response.css("div.box")[0])
    assert str(info.value) == "only <a> and <link> selectors can be followed, got <div>"


def test_follow_an_a_without_href_raises_value_error() -> None:
    response = make_response(LINKS)
    with pytest.raises(ValueError) as info:
        response.follow(response.css("a#anchor")[0])
    assert str(info.value) == "<a> element has no href attribute"


def test_follow_a_bad_link_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match=r"^unsupported URL scheme 'mailto'"):
        make_response("").follow("mailto:shop@example.com")


# --- Response.follow_all --------------------------------------------------------------------

MESSY_LINKS = (
    '<a href="a.html">a</a>'
    '<a href="mailto:shop@example.com">mail</a>'
    '<a href="javascript:void(0)">js</a>'
    '<a href="">empty</a>'
    '<a href="   ">blank</a>'
    '<a href="ftp://example.com/f">ftp</a>'
    '<a href="/' + "x" * 2100 + '">too long</a>'
    '<a href="http://example.com:99999/">bad port</a>'
    '<a href=" /b.html ">b</a>'
    '<a href="https://other.org/c">c</a>'
)
GOOD_URLS = [
    "http://example.com/dir/a.html",
    "http://example.com/b.html",
    "https://other.org/c",
]


def test_follow_all_css_skips_non_http_empty_and_invalid_links_quietly() -> None:
    spider = ShopSpider()
    requests = list(
        make_response(MESSY_LINKS).follow_all(css="a", callback=spider.parse_item, priority=2)
    )
    assert [r.url for r in requests] == GOOD_URLS
    assert {(r.callback, r.priority) for r in requests} == {("parse_item", 2)}


def test_follow_all_attribute_css_and_xpath_give_the_same_links() -> None:
    response = make_response(MESSY_LINKS)
    assert [r.url for r in response.follow_all(css="a::attr(href)")] == GOOD_URLS
    assert [r.url for r in response.follow_all(xpath="//a/@href")] == GOOD_URLS
    assert [r.url for r in response.follow_all(xpath="//a")] == GOOD_URLS


def test_follow_all_urls_accepts_strings_and_selectors() -> None:
    response = make_response(LINKS)
    urls = ["x.html", "", "mailto:a@b.c", response.css("link")[0]]
    assert [r.url for r in response.follow_all(urls)] == [
        "http://example.com/dir/x.html",
        "http://example.com/page/2",
    ]


def test_follow_all_checks_the_callback_name_against_the_current_spider(
    spider_in_context: ShopSpider,
) -> None:
    response = make_response(MESSY_LINKS)
    assert [r.callback for r in response.follow_all(css="a", callback="parse_item")] == [
        "parse_item"
    ] * 3
    # Checked when follow_all is called, before anything is iterated.
    with pytest.raises(InvalidRequest, match=r"^callback 'nope' is not a method of spider"):
        response.follow_all(css="a", callback="nope")


def test_follow_all_with_a_lambda_callback_raises() -> None:
    with pytest.raises(InvalidRequest, match=r"^callback must be a method of the spider"):
        make_response(MESSY_LINKS).follow_all(css="a", callback=lambda r: None)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"css": "a", "xpath": "//a"}, {"urls": ["a.html"], "css": "a"}],
    ids=["none", "css+xpath", "urls+css"],
)
def test_follow_all_takes_exactly_one_source(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        make_response(LINKS).follow_all(**kwargs)  # raised by the call, not on iteration
    assert str(info.value) == "follow_all takes exactly one of urls, css or xpath"


def test_follow_all_on_a_non_link_selector_raises_value_error() -> None:
    requests = make_response(LINKS).follow_all(css="div.box")  # links are read lazily
    with pytest.raises(ValueError) as info:
        list(requests)
    assert str(info.value) == "only <a> and <link> selectors can be followed, got <div>"


def test_follow_all_yields_lazily() -> None:
    def hrefs() -> Iterator[str]:
        yield "a.html"
        raise RuntimeError("read too far")

    requests = make_response("").follow_all(hrefs())
    assert next(requests).url == "http://example.com/dir/a.html"
    with pytest.raises(RuntimeError, match="read too far"):
        next(requests)


def test_follow_all_skips_anchors_without_href() -> None:
    response = make_response('<a name="top">top</a><a href="/next">next</a>')
    assert [r.url for r in response.follow_all(css="a")] == ["http://example.com/next"]


def test_follow_all_skips_a_malformed_link_and_keeps_the_others() -> None:
    response = make_response('<a href="http://[oops/x">bad</a><a href="/next">next</a>')
    assert [r.url for r in response.follow_all(css="a")] == ["http://example.com/next"]


def _slow_follow_all(base: str, hrefs: list[str]) -> list[str]:
    """What follow_all must give: urljoin, then Request's validation, bad links skipped."""
    urls = []
    for href in hrefs:
        with contextlib.suppress(ValueError):
            urls.append(Request(urljoin(base, href.strip())).url)
    return urls


@pytest.mark.parametrize(
    "page",
    [
        PAGE_URL,
        "https://u:p@site.test:8443/a/b?q=1",
        '<base href="http://cdn.example.net:8080/root/">',
        '<base href="https://Cdn.Example.NET/r;p?q#f">',
        '<base href="http://example.com:/x">',
    ],
)
def test_follow_all_agrees_with_urljoin_on_generated_links(page: str) -> None:
    """The root-relative shortcut gives exactly what urljoin and Request give: a seeded
    fuzz over hrefs of URL-safe characters, from a page URL or a valid <base href>."""
    rnd = random.Random(7)
    chars = "abcXYZ019-._~:/?#[]@!$&'()*+,;=%"
    hrefs = [
        rnd.choice(["/", "/", "//", "/.", "./", "?", "#", ""])
        + "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 12)))
        for _ in range(2000)
    ]
    html = "".join(f'<a href="{escape(h)}">x</a>' for h in hrefs)
    if page.startswith("<"):
        response = make_response(page + html)
    else:
        response = HtmlResponse(page, 200, {}, html.encode(), Request(page))
    got = [r.url for r in response.follow_all(css="a")]
    base = response.base_url
    kept = [h for h in hrefs if h.strip() and not is_self_link(response, base, h.strip())]
    assert got == _slow_follow_all(response.base_url, kept)


def test_follow_all_fast_path_agrees_with_urljoin() -> None:
    """Root-relative links take a shortcut past urljoin and re-validation; it must give
    exactly the Request the slow path gives."""
    from urllib.parse import urljoin

    hrefs = [
        "/a/b.html", "/a/b?x=1&y=2", "/p#frag", "/", "/a/./b", "/a/../b", "//other.test/x",
        "rel.html", "?q=1", "/caf\u00e9", "/sp ace", "/%7Euser/", "/x:y@z", "/.well-known/a",
    ]  # fmt: skip
    html = "".join(f'<a href="{h}">x</a>' for h in hrefs)
    for base in ("http://site.test/dir/page.html", "https://u:p@site.test:8443/"):
        response = HtmlResponse(base, 200, {}, html.encode(), Request(base))
        fast = [(r.url, r.callback, r.method, r.meta, r.priority) for r in
                response.follow_all(css="a", callback="parse")]  # fmt: skip
        slow = []
        for h in hrefs:
            r = Request(urljoin(base, h), callback="parse")
            slow.append((r.url, r.callback, r.method, r.meta, r.priority))
        assert fast == slow


@pytest.mark.parametrize(
    "page",
    [
        PAGE_URL,
        "https://u:p@site.test:8443/a/b?q=1",
        '<base href="http://cdn.example.net:8080/root/">',
        '<base href="https://Cdn.Example.NET/r;p?q#f">',
    ],
)
def test_follow_of_a_joined_url_agrees_with_the_slow_path(page: str) -> None:
    """The per-link idiom, ``response.follow(response.urljoin(href))``: the shortcut for an
    already joined URL on the page's origin gives exactly what urljoin + Request give, on a
    seeded fuzz of hrefs (and of the same URLs given as root-relative paths)."""
    rnd = random.Random(11)
    chars = "abcXYZ019-._~:/?#[]@!$&'()*+,;=%"
    hrefs = [
        rnd.choice(["/", "/", "//", "/.", "./", "?", "#", ""])
        + "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 12)))
        for _ in range(2000)
    ]
    if page.startswith("<"):
        response = make_response(page)
    else:
        response = HtmlResponse(page, 200, {}, b"<html></html>", Request(page))
    base = response.base_url
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    checked = 0
    for href in hrefs:
        with contextlib.suppress(ValueError):  # "//[x": the spider's own urljoin raises
            href = response.urljoin(href)
        for given in {href, href.removeprefix(origin)}:  # the URL, and its root-relative path
            try:
                slow = Request(urljoin(base, given), callback="parse")
            except ValueError:  # InvalidRequest, or a link urljoin cannot parse
                with pytest.raises(ValueError):
                    response.follow(given, callback="parse")
                continue
            checked += 1
            fast = response.follow(given, callback="parse")
            assert (fast.url, fast.callback, fast.method, fast.meta, fast.priority) == (
                slow.url, slow.callback, slow.method, slow.meta, slow.priority,
            ), given  # fmt: skip
    assert checked > 3000
