"""The fetcher against the real local test site: statuses, redirects, timeouts, size caps,
connection failures, headers, cookies and decoding, each with its exact outcome."""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

import spiderfarm
from spiderfarm.errors import FetchError
from spiderfarm.fetch import RETRYABLE_REASONS, Fetcher, retry_after_s
from spiderfarm.http import Request, Response
from spiderfarm.settings import Settings
from tests.sites import ENCODED_TEXT, HITS, SiteServer


async def fetch(url: str, settings: Mapping[str, Any] | None = None) -> Response:
    async with Fetcher(Settings.merge(settings or {})) as fetcher:
        return await fetcher.fetch(Request(url))


async def fetch_error(url: str, settings: Mapping[str, Any] | None = None) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch(url, settings)
    assert info.value.url == url
    return info.value


def paths(site: SiteServer) -> list[str]:
    return [path for path, _, _ in site.app[HITS]]


# -- status and body -------------------------------------------------------------------


async def test_status_and_body(test_site: SiteServer) -> None:
    url = test_site.url("/page/hello")
    response = await fetch(url)
    assert response.status == 200
    assert response.url == url
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.body == (
        b"<!DOCTYPE html>\n<html><head><title>hello</title></head>"
        b"<body><h1>hello</h1></body></html>\n"
    )
    assert response.css("h1::text").get() == "hello"
    assert response.request.url == url


@pytest.mark.parametrize("code", [404, 500, 503])
async def test_error_statuses_are_responses_not_errors(test_site: SiteServer, code: int) -> None:
    response = await fetch(test_site.url(f"/status/{code}"))
    assert response.status == code
    assert response.css("h1::text").get() == f"Status {code}"


async def test_no_content_has_an_empty_body(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/status/204"))
    assert (response.status, response.body) == (204, b"")


async def test_json_body(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/json"))
    assert response.json() == {"ok": True, "items": [1, 2, 3]}


async def test_one_fetcher_serves_many_requests(test_site: SiteServer) -> None:
    async with Fetcher(Settings()) as fetcher:
        for name in ("a", "b", "c"):
            response = await fetcher.fetch(Request(test_site.url(f"/page/{name}")))
            assert response.css("title::text").get() == name
    assert paths(test_site) == ["/page/a", "/page/b", "/page/c"]


# Escapes that are not needed but change the meaning to a server if decoded ("%3B" is
# data, ";" is a delimiter), and escapes of unreserved characters ("%7E").
AS_MADE_SAFE = [
    "/a;b=%3B",
    "/a?next=%2Fb%3Fc%3D1%26d%3D2",
    "/a?x=%26&y=%3D",
    "/a%2Fb",
    "/a?q=a%2Bb",
    "/a?q=%7E",
    "/%7Efoo",
    "/a?x=%25",
    "/a?q=a+b",
    "/a?x=%23",
    "/caf%C3%A9?q=%E6%9D%B1",
]


async def test_a_url_is_sent_byte_for_byte_as_made_safe() -> None:
    sent: list[str] = []

    async def record(request: web.Request) -> web.Response:
        sent.append(request.raw_path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", record)
    async with SiteServer(app) as site, Fetcher(Settings()) as fetcher:
        urls = [site.url(path) for path in AS_MADE_SAFE]
        responses = [await fetcher.fetch(Request(url)) for url in urls]
    assert sent == AS_MADE_SAFE
    assert [r.url for r in responses] == urls


# -- redirects -------------------------------------------------------------------------


async def test_redirects_are_followed(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/redirect/3"))
    assert response.status == 200
    assert response.url == test_site.url("/page/final")
    assert response.css("title::text").get() == "final"
    assert paths(test_site) == ["/redirect/3", "/redirect/2", "/redirect/1", "/page/final"]


async def test_too_many_redirects(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/redirect/6"), {"max_redirects": 3})
    assert error.reason == "too_many_redirects"
    assert "/page/final" not in paths(test_site)


async def test_max_redirects_is_the_number_of_hops_followed(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/redirect/3"), {"max_redirects": 3})
    assert response.url == test_site.url("/page/final")
    assert paths(test_site) == ["/redirect/3", "/redirect/2", "/redirect/1", "/page/final"]


async def test_one_hop_over_max_redirects_fails_after_following_max_redirects(
    test_site: SiteServer,
) -> None:
    error = await fetch_error(test_site.url("/redirect/4"), {"max_redirects": 3})
    assert (error.reason, error.detail) == ("too_many_redirects", "more than 3 redirects")
    assert paths(test_site) == ["/redirect/4", "/redirect/3", "/redirect/2", "/redirect/1"]


async def test_max_redirects_zero_follows_no_redirect(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/redirect/1"), {"max_redirects": 0})
    assert (error.reason, error.detail) == ("too_many_redirects", "max_redirects=0")
    assert paths(test_site) == ["/redirect/1"]


async def test_redirect_loop(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/redirect-loop"), {"max_redirects": 5})
    assert error.reason == "too_many_redirects"
    hits = paths(test_site)
    assert set(hits) == {"/redirect-loop"}
    # 5 or 6: the exact hop count is test_max_redirects_is_the_number_of_hops_followed's.
    assert 5 <= len(hits) <= 6


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/secret"])
async def test_redirect_to_a_non_http_scheme_is_not_followed(
    test_site: SiteServer, target: str
) -> None:
    url = test_site.url(f"/redirect-to?url={quote(target, safe='')}")
    error = await fetch_error(url)
    assert error.reason == "bad_redirect"
    assert target in error.detail
    assert len(paths(test_site)) == 1


async def test_redirect_to_another_http_url_is_followed(test_site: SiteServer) -> None:
    target = test_site.url("/page/elsewhere")
    response = await fetch(test_site.url(f"/redirect-to?url={quote(target, safe='')}"))
    assert response.url == target
    assert response.css("h1::text").get() == "elsewhere"


# -- timeouts and size caps -------------------------------------------------------------


async def test_total_timeout(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/delay/5"), {"timeout_s": 0.2})
    assert error.reason == "timeout"


async def test_read_timeout(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/delay/5"), {"read_timeout_s": 0.2})
    assert error.reason == "timeout"


async def test_a_delay_within_the_timeout_succeeds(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/delay/0.05"), {"timeout_s": 5})
    assert response.css("h1::text").get() == "Delay 0.05"


async def test_body_at_the_cap_is_kept(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/big?bytes=200000"), {"max_body_bytes": 200_000})
    assert len(response.body) == 200_000
    assert response.body.startswith(b"<!DOCTYPE html>")


async def test_content_length_over_the_cap_is_too_large(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/big?bytes=200001"), {"max_body_bytes": 200_000})
    assert error.reason == "too_large"
    assert error.detail == "Content-Length 200001 > 200000"


async def test_endless_chunked_body_is_too_large(test_site: SiteServer) -> None:
    error = await fetch_error(test_site.url("/endless"), {"max_body_bytes": 300_000})
    assert error.reason == "too_large"
    assert error.detail == "body over max_body_bytes=300000"


# -- connection failures ---------------------------------------------------------------


async def test_refused_connection() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await fetch_error(f"http://127.0.0.1:{port}/")
    assert error.reason == "refused"


async def test_dns_failure() -> None:
    # .invalid is reserved (RFC 2606): it never resolves, and no query leaves the host.
    error = await fetch_error("http://something.invalid/", {"connect_timeout_s": 5})
    assert error.reason == "dns_error"


def test_retryable_reasons() -> None:
    assert {"timeout", "refused"} <= RETRYABLE_REASONS
    for permanent in ("too_large", "too_many_redirects", "bad_redirect", "bad_request"):
        assert permanent not in RETRYABLE_REASONS


# -- headers and cookies ---------------------------------------------------------------


async def test_user_agent_and_default_headers_are_sent(test_site: SiteServer) -> None:
    settings = {
        "user_agent": "spiderfarm-tests/9.9",
        "default_headers": {"X-Crawl": "yes", "Accept-Language": "fr"},
    }
    async with Fetcher(Settings.merge(settings)) as fetcher:
        plain = (await fetcher.fetch(Request(test_site.url("/echo-headers")))).json()
        own = await fetcher.fetch(
            Request(test_site.url("/echo-headers?2"), headers={"X-Crawl": "mine"})
        )
    assert plain["User-Agent"] == "spiderfarm-tests/9.9"
    assert plain["X-Crawl"] == "yes"
    assert plain["Accept-Language"] == "fr"
    assert own.json()["X-Crawl"] == "mine"  # a request's own header wins
    assert own.json()["User-Agent"] == "spiderfarm-tests/9.9"


async def test_default_user_agent(test_site: SiteServer) -> None:
    response = await fetch(test_site.url("/echo-headers"))
    assert response.json()["User-Agent"] == f"spiderfarm/{spiderfarm.__version__}"


@pytest.mark.parametrize(("enabled", "expected"), [(True, "abc"), (False, "none")])
async def test_cookies_kept_only_when_enabled(
    test_site: SiteServer, enabled: bool, expected: str
) -> None:
    async with Fetcher(Settings.merge({"cookies_enabled": enabled})) as fetcher:
        await fetcher.fetch(Request(test_site.url("/set-cookie")))
        response = await fetcher.fetch(Request(test_site.url("/check-cookie")))
    assert response.css("#cookie::text").get() == expected


async def test_cookies_are_not_shared_between_fetchers(test_site: SiteServer) -> None:
    async with Fetcher(Settings()) as fetcher:
        await fetcher.fetch(Request(test_site.url("/set-cookie")))
    response = await fetch(test_site.url("/check-cookie"))
    assert response.css("#cookie::text").get() == "none"


# -- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["header-latin1", "meta-only", "bogus", "utf8-none"])
async def test_encodings_decode(test_site: SiteServer, kind: str) -> None:
    response = await fetch(test_site.url(f"/encoding/{kind}"))
    assert response.css("#text::text").get() == ENCODED_TEXT
    assert ENCODED_TEXT in response.text


async def test_mislabelled_encoding_degrades_without_raising(test_site: SiteServer) -> None:
    # cp1252 bytes served as utf-8: the 0xE9 byte is not UTF-8, so it is replaced, like
    # a browser would; the rest of the page still parses.
    response = await fetch(test_site.url("/encoding/mislabelled"))
    assert response.body.count(b"caf\xe9") == 1
    assert response.css("#text::text").get() == "caf\ufffd"
    assert response.encoding == "utf-8"
    assert response.css("title::text").get() == "Encoding"


# -- Retry-After -------------------------------------------------------------------------


def test_retry_after_delta_seconds() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s(" 120 ") == 120.0
    assert retry_after_s("0") == 0.0


def test_retry_after_is_at_most_a_day() -> None:
    assert retry_after_s("9" * 400) == 86_400.0  # float() of it is inf
    assert retry_after_s("Fri, 31 Dec 9999 23:59:59 GMT") == 86_400.0


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 5) == 5.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "1.5", "-5", "Wed, 99 Foo"])
def test_retry_after_unusable_values_are_zero(value: str | None) -> None:
    assert retry_after_s(value) == 0.0


@pytest.mark.parametrize("value", ["²", "١٢", "٣"])
def test_retry_after_never_raises_on_odd_digits(value: str) -> None:
    # Digits outside ASCII: isdigit() says yes, a Retry-After header says no.
    assert retry_after_s(value) == 0.0
