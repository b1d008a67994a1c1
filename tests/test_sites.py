"""The local test sites behave exactly as other tests assume, checked over real HTTP."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import parsel
import pytest
import yarl

from tests.sites import (
    COUNTERS,
    ENCODED_TEXT,
    HITS,
    PNG_BYTES,
    XHTML_DOCS,
    SiteServer,
    SiteStartError,
    captured_output,
    make_test_app,
    run_subprocess_site,
    stop_subprocess,
    xhtml_page,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _get(
    session: aiohttp.ClientSession, url: str, **kwargs: object
) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, dict(resp.headers), await resp.read()


# -- in-process site --------------------------------------------------------------


async def test_site_server_url_and_port(test_site: SiteServer) -> None:
    assert test_site.port > 0
    assert test_site.url() == f"http://127.0.0.1:{test_site.port}/"
    assert test_site.url("/page/a") == test_site.url("page/a")
    assert test_site.url("/page/a?x=1") == f"http://127.0.0.1:{test_site.port}/page/a?x=1"


async def test_page(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    status, headers, body = await _get(session, test_site.url("/page/hello"))
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    sel = parsel.Selector(text=body.decode())
    assert sel.css("title::text").get() == "hello"
    assert sel.css("h1::text").get() == "hello"


async def test_links_graph_is_exact(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    start = test_site.url("/links/0?max=5")
    seen = {start}
    todo = [start]
    titles: set[str] = set()
    while todo:
        url = todo.pop()
        async with session.get(url) as resp:
            assert resp.status == 200
            sel = parsel.Selector(text=await resp.text())
        title = sel.css("title::text").get()
        assert title is not None
        assert sel.css("h1::text").get() == title
        titles.add(title)
        for href in sel.css("a::attr(href)").getall():
            absolute = str(resp.url.join(yarl.URL(href)))
            if absolute not in seen:
                seen.add(absolute)
                todo.append(absolute)
    assert titles == {f"Links {n}" for n in range(6)}
    assert seen - {start} == {test_site.url(f"/links/{n}?max=5") for n in range(1, 6)}


async def test_links_default_max(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    _, _, body = await _get(session, test_site.url("/links/9"))
    hrefs = parsel.Selector(text=body.decode()).css("a::attr(href)").getall()
    assert hrefs == ["/links/10?max=10"]
    _, _, body = await _get(session, test_site.url("/links/3?max=4"))
    assert parsel.Selector(text=body.decode()).css("a::attr(href)").getall() == ["/links/4?max=4"]


async def test_flaky_fails_then_succeeds(
    test_site: SiteServer, session: aiohttp.ClientSession
) -> None:
    url = test_site.url("/flaky/a?fail=2&code=503")
    statuses = []
    for _ in range(3):
        status, _, body = await _get(session, url)
        statuses.append(status)
    assert statuses == [503, 503, 200]
    assert b"<h1>ok a</h1>" in body
    # Keys count separately, and the code is configurable.
    status, _, _ = await _get(session, test_site.url("/flaky/b?fail=1&code=500"))
    assert status == 500
    assert test_site.app[COUNTERS] == {"flaky/a": 3, "flaky/b": 1}


async def test_retry_after(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    url = test_site.url("/retry-after/k?seconds=2&fail=1")
    status, headers, _ = await _get(session, url)
    assert status == 429
    assert headers["Retry-After"] == "2"
    status, headers, body = await _get(session, url)
    assert status == 200
    assert "Retry-After" not in headers
    assert b"<h1>ok k</h1>" in body


async def test_redirect_chain(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    status, headers, _ = await _get(session, test_site.url("/redirect/3"), allow_redirects=False)
    assert status == 302
    assert headers["Location"] == "/redirect/2"
    status, headers, _ = await _get(session, test_site.url("/redirect/1"), allow_redirects=False)
    assert headers["Location"] == "/page/final"
    async with session.get(test_site.url("/redirect/3")) as resp:
        assert resp.status == 200
        assert str(resp.url) == test_site.url("/page/final")
        assert [str(r.url) for r in resp.history] == [
            test_site.url(f"/redirect/{n}") for n in (3, 2, 1)
        ]


async def test_redirect_loop(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    status, headers, _ = await _get(session, test_site.url("/redirect-loop"), allow_redirects=False)
    assert (status, headers["Location"]) == (302, "/redirect-loop")
    with pytest.raises(aiohttp.TooManyRedirects):
        await _get(session, test_site.url("/redirect-loop"), max_redirects=5)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.invalid/x", "/page/z"])
async def test_redirect_to(
    test_site: SiteServer, session: aiohttp.ClientSession, target: str
) -> None:
    url = test_site.url("/redirect-to")
    async with session.get(url, params={"url": target}, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == target


def _encoding_page(head: str = "") -> str:
    return (
        f"<!DOCTYPE html>\n<html><head>{head}<title>Encoding</title></head>"
        f'<body><p id="text">{ENCODED_TEXT}</p></body></html>\n'
    )


@pytest.mark.parametrize(
    ("kind", "content_type", "body"),
    [
        ("header-latin1", "text/html; charset=iso-8859-1", _encoding_page().encode("latin-1")),
        (
            "meta-only",
            "text/html",
            _encoding_page('<meta charset="windows-1252">').encode("cp1252"),
        ),
        ("mislabelled", "text/html; charset=utf-8", _encoding_page().encode("cp1252")),
        ("bogus", "text/html; charset=x-no-such-charset", _encoding_page().encode("utf-8")),
        ("utf8-none", "text/html", _encoding_page().encode("utf-8")),
    ],
)
async def test_encodings_bytes_exact(
    test_site: SiteServer,
    session: aiohttp.ClientSession,
    kind: str,
    content_type: str,
    body: bytes,
) -> None:
    status, headers, got = await _get(session, test_site.url(f"/encoding/{kind}"))
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert got == body
    expected_cafe = "café".encode("utf-8" if kind in ("bogus", "utf8-none") else "cp1252")
    assert expected_cafe in got


async def test_status_codes(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    for code in (200, 404, 410, 500, 503):
        status, _, body = await _get(session, test_site.url(f"/status/{code}"))
        assert status == code
        assert f"<h1>Status {code}</h1>".encode() in body
    status, _, body = await _get(session, test_site.url("/status/204"))
    assert (status, body) == (204, b"")
    status, _, _ = await _get(session, test_site.url("/robots.txt"))
    assert status == 404


async def test_delay(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    status, _, body = await _get(session, test_site.url("/delay/0.2"))
    answered = time.monotonic()
    assert status == 200
    ((path, arrived, _),) = test_site.app[HITS]
    assert path == "/delay/0.2"
    assert answered - arrived >= 0.2
    assert b"<h1>Delay 0.2</h1>" in body
    with pytest.raises(TimeoutError):
        await _get(session, test_site.url("/delay/30"), timeout=aiohttp.ClientTimeout(total=0.2))


async def test_json(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    async with session.get(test_site.url("/json")) as resp:
        assert resp.content_type == "application/json"
        assert await resp.json() == {"ok": True, "items": [1, 2, 3]}


async def test_xhtml_docs_are_xhtml_with_a_prolog_served_as_html(
    test_site: SiteServer, session: aiohttp.ClientSession
) -> None:
    for path, (title, head, links) in XHTML_DOCS.items():
        status, headers, body = await _get(session, test_site.url(f"/xhtml/{path}"))
        assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
        assert body == xhtml_page(title, head, links)
        assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html')
        assert b'<html xmlns="http://www.w3.org/1999/xhtml"' in body
        # The trap: left to guess, parsel takes it for XML and finds no title.
        assert parsel.Selector(text=body.decode()).css("title::text").get() is None
        assert parsel.Selector(text=body.decode(), type="html").css("title::text").get() == title
    status, headers, body = await _get(session, test_site.url("/xhtml/figure.png"))
    assert (status, headers["Content-Type"], body) == (200, "image/png", PNG_BYTES)
    status, _, _ = await _get(session, test_site.url("/xhtml/ch9.html"))
    assert status == 404


async def test_big_is_exact_size(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    n = 3 * 1024 * 1024 + 17
    status, headers, body = await _get(session, test_site.url(f"/big?bytes={n}"))
    assert status == 200
    assert headers["Content-Length"] == str(n)
    assert len(body) == n
    assert body.startswith(b"<!DOCTYPE html>")
    _, _, body = await _get(session, test_site.url("/big?bytes=9"))
    assert body == b"<!DOCTYPE"


async def test_endless_streams_until_client_leaves(
    test_site: SiteServer, session: aiohttp.ClientSession
) -> None:
    limit = 2 * 1024 * 1024
    received = 0
    async with session.get(test_site.url("/endless")) as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        async for chunk in resp.content.iter_chunked(64 * 1024):
            received += len(chunk)
            if received >= limit:
                break
    assert received >= limit
    # The server is still healthy after the client hung up mid-body.
    status, _, _ = await _get(session, test_site.url("/json"))
    assert status == 200


async def test_echo_headers(test_site: SiteServer, session: aiohttp.ClientSession) -> None:
    async with session.get(
        test_site.url("/echo-headers"), headers={"User-Agent": "spiderfarm-test/1", "X-A": "b"}
    ) as resp:
        echoed = await resp.json()
    assert echoed["User-Agent"] == "spiderfarm-test/1"
    assert echoed["X-A"] == "b"


async def test_cookies(test_site: SiteServer) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        _, _, body = await _get(session, test_site.url("/check-cookie"))
        assert parsel.Selector(text=body.decode()).css("#cookie::text").get() == "none"
        _, headers, _ = await _get(session, test_site.url("/set-cookie"))
        assert headers["Set-Cookie"].startswith("session=abc")
        _, _, body = await _get(session, test_site.url("/check-cookie"))
        assert parsel.Selector(text=body.decode()).css("#cookie::text").get() == "abc"


async def test_hits_recorded_in_order(
    test_site: SiteServer, session: aiohttp.ClientSession
) -> None:
    paths = ["/page/a", "/links/1?max=3", "/status/404", "/no/such/route", "/page/a"]
    for path in paths:
        await _get(session, test_site.url(path), headers={"User-Agent": "hits-test"})
    hits = test_site.app[HITS]
    assert [path for path, _, _ in hits] == paths
    times = [t for _, t, _ in hits]
    assert all(a < b for a, b in itertools.pairwise(times))
    assert all(headers["User-Agent"] == "hits-test" for _, _, headers in hits)
    assert all(headers["Host"] == f"127.0.0.1:{test_site.port}" for _, _, headers in hits)


async def test_each_app_has_its_own_state(session: aiohttp.ClientSession) -> None:
    async with SiteServer(make_test_app()) as one, SiteServer(make_test_app()) as two:
        assert one.port != two.port
        await _get(session, one.url("/flaky/x"))
        assert len(one.app[HITS]) == 1
        assert two.app[HITS] == []
        assert two.app[COUNTERS] == {}


# -- the static quotes site ----------------------------------------------------------


async def test_quotes_site(quotes_site: str, session: aiohttp.ClientSession) -> None:
    assert quotes_site.startswith("http://127.0.0.1:")
    assert quotes_site.endswith("/")
    status, _, body = await _get(session, quotes_site)
    assert status == 200
    quotes = parsel.Selector(text=body.decode()).css("div.quote")
    assert len(quotes) == 10
    assert all(q.css("span.text::text").get() and q.css("small.author::text").get() for q in quotes)
    status, headers, _ = await _get(session, quotes_site + "page/2", allow_redirects=False)
    assert status == 301
    assert headers["Location"] == "/page/2/"
    status, _, body = await _get(session, quotes_site + "page/2/")
    assert status == 200
    assert len(parsel.Selector(text=body.decode()).css("div.quote")) == 10


# -- subprocess sites -----------------------------------------------------------------


def test_subprocess_env(subprocess_env: dict[str, str], repo_root: Path, tmp_path: Path) -> None:
    assert subprocess_env["PYTHONPATH"].split(":")[0] == str(repo_root)
    assert subprocess_env["PYTHONUNBUFFERED"] == "1"
    # From an unrelated directory a child still imports this checkout's test sites.
    done = subprocess.run(
        [sys.executable, "-c", "import tests.sites as s; print(s.__file__)"],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert done.stdout.strip() == str(repo_root / "tests" / "sites.py")


def test_paths(repo_root: Path, shared_dir: Path) -> None:
    assert (repo_root / "pyproject.toml").is_file()
    assert (repo_root / "tests" / "sites.py").is_file()
    assert (shared_dir / "sites" / "quotes" / "index.html").is_file()


async def test_run_subprocess_site_standalone(session: aiohttp.ClientSession) -> None:
    proc, base_url = run_subprocess_site([sys.executable, "-m", "tests.sites", "--port", "0"])
    try:
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/")
        async with session.get(base_url + "json") as resp:
            assert await resp.json() == {"ok": True, "items": [1, 2, 3]}
        status, _, body = await _get(session, base_url + "flaky/s?fail=1")
        assert status == 503
        status, _, body = await _get(session, base_url + "flaky/s?fail=1")
        assert (status, b"<h1>ok s</h1>" in body) == (200, True)
    finally:
        returncode = stop_subprocess(proc)
    assert returncode == 0
    stdout, stderr = captured_output(proc)
    assert stdout == f"serving {base_url}\n"
    assert stderr == ""
    assert proc.stdout is not None and proc.stdout.closed


def test_run_subprocess_site_reports_early_exit() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom: bad flag\\n'); sys.exit(3)"]
    with pytest.raises(SiteStartError, match=r"exited with code 3[\s\S]*boom: bad flag"):
        run_subprocess_site(argv)


def test_run_subprocess_site_reports_timeout() -> None:
    argv = [
        sys.executable,
        "-c",
        "import sys, time; print('starting', flush=True); print('slow', file=sys.stderr,"
        " flush=True); time.sleep(60)",
    ]
    with pytest.raises(SiteStartError, match=r"printed no port within 2.0 s") as info:
        run_subprocess_site(argv, timeout_s=2.0)
    assert "starting" in str(info.value)
    assert "slow" in str(info.value)
