"""Hostile pages: every case fails its one request with a stable reason, or reaches the
callback as a usable ``Response``; a crawl of all of them at once finishes cleanly.

The cases live in ``tests/hostile_site.py``; ``FAILURES`` and ``USABLE`` below say what
each must become, and ``test_every_case_has_an_expected_outcome`` keeps them in step.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest

from spiderfarm.errors import FetchError
from spiderfarm.fetch import ACCEPT_ENCODING, RETRYABLE_REASONS, Fetcher
from spiderfarm.http import InvalidRequest, Request, Response
from spiderfarm.settings import Settings
from tests import sites
from tests.farm import read_items
from tests.hostile_site import (
    HITS,
    HUGE_TEXT_BYTES,
    SKIPPED_LINKS,
    HostileSite,
    brotli_bomb,
    zlib_bomb,
)
from tests.sites import (
    REPO_ROOT,
    SiteServer,
    run_subprocess_site,
    stop_subprocess,
    subprocess_environ,
)

pytestmark = pytest.mark.timeout(120)

#: The settings the unit tests and the crawl start from: the 12 MB page fits, bombs do
#: not. Timeouts are roomy (other tests may be loading the machine) except in the cases
#: that are about timeouts, which use ``TIGHT``.
SETTINGS: dict[str, Any] = {
    "max_body_bytes": 13 * 2**20,
    "timeout_s": 10.0,
    "read_timeout_s": 2.0,
    "max_redirects": 5,
}
TIGHT = {"timeout_s": 1.0, "read_timeout_s": 0.3}

#: Brotli is decoded when the Brotli (>= 1.2) package is installed, else refused.
BROTLI = "br" in ACCEPT_ENCODING
needs_brotli = pytest.mark.skipif(not BROTLI, reason="the Brotli package is not installed")
#: The site serves HTTPS when it can make a certificate (see ``self_signed_cert``).
TLS = importlib.util.find_spec("cryptography") is not None or shutil.which("openssl") is not None

#: case -> the reason its request fails with.
FAILURES: dict[str, str] = {
    "/encoded/gzip-bomb": "too_large",
    "/encoded/deflate-bomb": "too_large",
    "/encoded/br-bomb": "too_large" if BROTLI else "bad_encoding",
    "/encoded/gzip-empty-members": "bad_encoding",
    "/encoded/gzip-endless-members": "bad_encoding",
    "/encoded/gzip-corrupt": "bad_encoding",
    "/encoded/gzip-1500-times": "bad_encoding",
    "/encoded/br-corrupt": "bad_encoding",
    "/encoded/zstd": "bad_encoding",
    "/endless": "too_large",
    "/huge-content-length": "too_large",
    "/drip": "timeout",
    "/stall": "timeout",
    "/slow-headers": "timeout",
    "/redirect/loop": "too_many_redirects",
    "/redirect/to-file": "bad_redirect",
    "/redirect/to-ftp": "bad_redirect",
    "/redirect/to-data": "bad_redirect",
    "/redirect/to-javascript": "bad_redirect",
    "/redirect/to-gopher": "bad_redirect",
    "/redirect/to-broken-url": "bad_redirect",
    "/huge-header-line": "bad_response",
    "/too-many-headers": "bad_response",
    "/garbage-status": "bad_response",
    "/not-http": "bad_response",
    "/reset-mid-body": "disconnected",
    "/reset-before-response": "disconnected",
    "/close-before-response": "disconnected",
    "/truncated": "truncated",
    "/truncated-chunked": "truncated",
    "/encoded/gzip-truncated": "truncated",
    "/encoded/deflate-truncated": "truncated",
    "/encoded/br-truncated": "truncated" if BROTLI else "bad_encoding",
    "dns-failure": "dns_error",
    "idn-host": "dns_error",
    "emoji-host": "dns_error",
    "underscore-host": "dns_error",
    "bad-punycode": "dns_error",
    "refused": "refused",
    "tls-self-signed": "tls_error",
}
if not BROTLI:
    FAILURES["/encoded/br"] = "bad_encoding"
if not TLS:
    del FAILURES["tls-self-signed"]

TEXT = "café, naïve, 東京"
#: case -> (CSS query, the text it must find; None: the page is garbage, but usable).
USABLE: dict[str, tuple[str, str | None]] = {
    "/ok/healthy": ("h1::text", "healthy"),
    "/encoded/gzip": ("h1::text", "gzip page"),
    "/encoded/gzip-members": ("h1::text", "gzip-members page"),
    "/encoded/deflate": ("h1::text", "deflate page"),
    "/encoded/deflate-raw": ("h1::text", "deflate-raw page"),
    "/encoded/deflate-raw-stored": ("h1::text", "deflate-raw-stored page"),
    **({"/encoded/br": ("h1::text", "br page")} if BROTLI else {}),
    "/encoded/bogus-token": ("h1::text", "bogus token"),
    "/huge-text": ("#after::text", "after"),
    "/charset/mislabelled": ("#t::text", None),  # UTF-8 read as the header says: mojibake
    "/charset/latin1-as-utf8": ("#t::text", "caf\ufffd, naïve, 東京"),
    "/charset/unknown": ("#t::text", TEXT),
    "/charset/undefined-codec": ("#t::text", TEXT),
    "/charset/binary-codec": ("#t::text", TEXT),
    "/charset/rot13": ("#t::text", TEXT),
    "/charset/meta-undefined": ("#t::text", TEXT),
    "/charset/idna": ("#t::text", TEXT),
    "/charset/utf16-label-ascii": ("#t::text", None),  # the header lies; browsers agree
    "/charset/utf32-odd": ("#t::text", None),
    "/charset/bom-vs-header": ("#t::text", TEXT),  # a BOM outranks the header
    "/charset/empty-charset": ("#t::text", TEXT),
    "/junk-charset-header": ("#t::text", "junk charset"),
    "/malformed/nul": ("#t::text", "a\ufffdb"),
    "/malformed/unclosed": ("#t::text", "one"),
    "/malformed/garbage": ("#t::text", "text"),
    "/malformed/deep": ("#t::text", None),  # lxml gives up below 255 levels; no crash
    "/malformed/xml-decl": ("#t::text", "xml"),  # "utf-16" found in ASCII bytes is wrong
    "/malformed/control-chars": ("#t::text", "\x01\x02\x0b\x0c\x1b\x7f"),
    "/malformed/empty": ("p", None),
    "/malformed/only-whitespace": ("p", None),
    "/malformed/binary": ("p", None),
}


@pytest.fixture
async def site() -> AsyncIterator[HostileSite]:
    async with HostileSite() as server:
        yield server


async def fetch(url: str, settings: Mapping[str, Any] | None = None, **kw: Any) -> Response:
    async with Fetcher(Settings.merge({**SETTINGS, **(settings or {})})) as fetcher:
        return await fetcher.fetch(Request(url, **kw))


async def fetch_error(url: str, settings: Mapping[str, Any] | None = None) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch(url, settings)
    return info.value


async def test_every_case_has_an_expected_outcome(site: HostileSite) -> None:
    assert not set(FAILURES) & set(USABLE)
    assert set(site.case_urls()) == set(FAILURES) | set(USABLE)


# -- one request, one reason ------------------------------------------------------------


@pytest.mark.parametrize(("case", "reason"), FAILURES.items())
async def test_case_fails_with_its_reason(site: HostileSite, case: str, reason: str) -> None:
    url = Request(site.case_urls()[case]).url
    error = await fetch_error(url, TIGHT if reason == "timeout" else None)
    assert (error.reason, error.url) == (reason, url), error.detail


@pytest.mark.parametrize(("case", "query", "expected"), [(c, *v) for c, v in USABLE.items()])
async def test_case_gives_a_usable_response(
    site: HostileSite, case: str, query: str, expected: str | None
) -> None:
    response = await fetch(site.case_urls()[case])
    assert response.status == 200
    found = response.css(query).get()  # the point: a selector works, whatever came
    assert isinstance(response.text, str)
    assert response.css("*")  # lxml made a tree of it, if only <html></html>
    if expected is not None:
        assert found == expected


async def test_the_12_mb_text_node_is_whole(site: HostileSite) -> None:
    response = await fetch(site.url("/huge-text"))
    text = response.css("#t::text").get()
    assert text is not None
    assert len(text) == HUGE_TEXT_BYTES
    assert set(text) == {"x"}


# -- bombs ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "deflate", pytest.param("br", marks=needs_brotli)])
async def test_a_bomb_is_inflated_a_piece_at_a_time(site: HostileSite, kind: str) -> None:
    # 64 MiB of zeros in at most 70 KB, which arrives in one or two reads: a decoder that
    # inflated a whole read at once would allocate some 64 MB before any check ran.
    bomb = brotli_bomb(64) if kind == "br" else zlib_bomb(64, kind == "gzip")
    assert len(bomb) < 70_000
    tracemalloc.start()
    try:
        error = await fetch_error(site.url(f"/encoded/{kind}-bomb"), {"max_body_bytes": 2**20})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "too_large"
    assert error.detail == "decompressed body over max_body_bytes=1048576"
    assert peak < 6 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading a bomb capped at 1 MiB"


@pytest.mark.parametrize("kind", ["gzip", "deflate", pytest.param("br", marks=needs_brotli)])
async def test_a_body_under_the_cap_decompresses_exactly(site: HostileSite, kind: str) -> None:
    response = await fetch(site.url(f"/encoded/{kind}-bomb?mib=3"), {"max_body_bytes": 3 * 2**20})
    assert response.body == bytes(3 * 2**20)


async def test_endless_empty_gzip_members_stop_at_the_member_cap(site: HostileSite) -> None:
    error = await fetch_error(site.url("/encoded/gzip-endless-members"), {"timeout_s": 30})
    assert error.reason == "bad_encoding"
    assert error.detail == "Content-Encoding gzip: more than 1024 gzip members"


@pytest.mark.parametrize("kind", ["gzip", "deflate", pytest.param("br", marks=needs_brotli)])
async def test_a_compressed_stream_cut_short_is_truncated_not_a_page(
    site: HostileSite, kind: str
) -> None:
    # The HTTP message is whole (its Content-Length is right), the stream in it is not:
    # accepted, it would be half a page stored as the page, and never fetched again.
    error = await fetch_error(site.url(f"/encoded/{kind}-truncated"))
    assert (error.reason, error.detail) == (
        "truncated",
        f"Content-Encoding {kind}: the stream ends early",
    )
    assert error.reason in RETRYABLE_REASONS


ENCODINGS = ["gzip", "deflate", pytest.param("br", marks=needs_brotli)]


@pytest.mark.parametrize("status", [200, 204, 304])
@pytest.mark.parametrize("coding", ENCODINGS)
async def test_an_empty_body_under_a_content_encoding_is_complete(
    site: HostileSite, coding: str, status: int
) -> None:
    # 200 is sent with Content-Length: 0; 204 and 304 never have a body.
    response = await fetch(site.url(f"/encoded/empty?status={status}&coding={coding}"))
    assert (response.status, response.body) == (status, b"")
    assert response.headers["Content-Encoding"] == coding


@pytest.mark.parametrize("coding", ENCODINGS)
async def test_a_head_request_for_a_compressed_page_has_an_empty_body(
    site: HostileSite, coding: str
) -> None:
    response = await fetch(site.url(f"/encoded/{coding}"), method="HEAD")
    assert (response.status, response.body) == (200, b"")
    assert response.headers["Content-Encoding"] == coding
    assert int(response.headers["Content-Length"]) > 0  # the GET body's length, not sent


async def test_raw_deflate_that_looks_zlib_wrapped_is_still_decoded(site: HostileSite) -> None:
    # Its first byte, 0x08, has CM=8 like a zlib header: read as one, it fails the header
    # check ("incorrect header check"), and is read again as the raw deflate it is.
    response = await fetch(site.url("/encoded/deflate-raw-stored"))
    assert response.body == (
        b"<!DOCTYPE html><html><head><title>deflate-raw-stored page</title></head>"
        b"<body><h1>deflate-raw-stored page</h1></body></html>"
    )


# -- redirects and headers --------------------------------------------------------------


@pytest.mark.parametrize(("hops", "requests"), [(0, 1), (1, 2), (3, 4)])
async def test_a_redirect_loop_stops_at_the_hop_limit(
    site: HostileSite, hops: int, requests: int
) -> None:
    error = await fetch_error(site.url("/redirect/loop"), {"max_redirects": hops})
    assert error.reason == "too_many_redirects"
    assert site.app[HITS] == ["/redirect/loop"] * requests


@pytest.mark.parametrize("target", ["file", "ftp", "data", "javascript", "gopher", "broken-url"])
async def test_a_non_http_redirect_is_never_followed(site: HostileSite, target: str) -> None:
    url = site.case_urls()[f"/redirect/to-{target}"]
    assert (await fetch_error(url)).reason == "bad_redirect"
    assert len(site.app[HITS]) == 1


SECRETS = {
    "Authorization": "Bearer s3cret",
    "Proxy-Authorization": "Basic czNjcmV0",
    "Cookie": "session=s3cret",
    "X-Keep": "kept",
}


async def test_credentials_are_dropped_on_a_cross_origin_redirect(
    site: HostileSite, test_site: SiteServer
) -> None:
    # Two ports of 127.0.0.1 are two origins.
    target = test_site.url("/echo-headers")
    url = site.url(f"/redirect/to?url={quote(target, safe='')}")
    response = await fetch(url, headers=SECRETS)
    assert response.url == target
    [(_, _, received)] = test_site.app[sites.HITS]
    assert received["X-Keep"] == "kept"
    assert {"Authorization", "Proxy-Authorization", "Cookie"}.isdisjoint(received)


async def test_credentials_are_kept_on_a_same_origin_redirect(site: HostileSite) -> None:
    url = site.url(f"/redirect/to?url={quote('/echo-headers', safe='')}")
    received = (await fetch(url, headers=SECRETS)).json()
    assert {k: received.get(k) for k in SECRETS} == SECRETS


@pytest.mark.skipif(not TLS, reason="neither cryptography nor openssl is available")
async def test_tls_verification_can_be_turned_off(site: HostileSite) -> None:
    response = await fetch(site.case_urls()["tls-self-signed"], {"verify_tls": False})
    assert response.css("h1::text").get() == "tls"


# -- host names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://something.invalid/",
        "http://bücher.invalid/",
        "http://xn--zz.invalid/",
        "http://SOMETHING.INVALID./",
    ],
)
async def test_hopeless_host_names_fail_without_asking_dns(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        raise OSError("the test forbids DNS")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    error = await fetch_error(Request(url).url)
    assert error.reason == "dns_error"
    assert asked == []


@pytest.mark.parametrize(
    "url",
    [
        "http://long.invalid/" + "x" * 2100,
        "http://127.0.0.1:99999/",
        "http://exa mple.invalid/",
        "http://a..b.invalid/",
        "http://[::1/",
        "http://" + "a" * 300 + ".example/",  # over 253 characters: DNS cannot ask
        "http://" + "b" * 64 + ".example/",  # a label over 63 characters
        "mailto:someone@example.invalid",
        "javascript:alert(1)",
    ],
)
def test_unfetchable_urls_are_refused_where_the_request_is_made(url: str) -> None:
    with pytest.raises(InvalidRequest):
        Request(url)


async def test_follow_all_keeps_only_the_cases(site: HostileSite) -> None:
    index = await fetch(site.url("/"))
    followed = {r.url for r in index.follow_all(css="a")}
    assert followed == {Request(u).url for u in site.case_urls().values()}
    assert len(SKIPPED_LINKS) == len(index.css("a.skip"))


# -- slow drips beside a healthy host ---------------------------------------------------


@pytest.fixture(scope="module")
def hostile_process() -> Iterator[str]:
    """``tests/hostile_site.py`` in its own process: the farm's workers are processes, and
    the drip server's work must not share the event loop being measured."""
    argv = [sys.executable, "-m", "tests.hostile_site", "--port", "0"]
    proc, base = run_subprocess_site(argv, timeout_s=60)  # other tests may load the CPUs
    try:
        yield base
    finally:
        stop_subprocess(proc)


async def _fetch_healthy(fetcher: Fetcher, site: SiteServer, n: int, slots: int) -> float:
    """Fetch ``n`` healthy pages through ``slots`` concurrent tasks; pages per second."""
    urls = [site.url(f"/page/p{i}-{time.monotonic_ns()}") for i in range(n)]
    titles: list[str | None] = []

    async def slot() -> None:
        while urls:
            response = await fetcher.fetch(Request(urls.pop()))
            titles.append(response.css("h1::text").get())

    started = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(slots)))
    elapsed = time.perf_counter() - started
    assert len(titles) == n
    assert all(t and t.startswith("p") for t in titles)
    return n / elapsed


async def test_200_slow_drips_do_not_starve_a_healthy_host(
    hostile_process: str, test_site: SiteServer
) -> None:
    # One fetcher, as one worker has, with room for all 200 drips at once. Throughput is
    # a printed figure (the median of three batches each way), never an assertion.
    settings = Settings.merge({"concurrency": 256, "timeout_s": 3.0, "read_timeout_s": 0.5})
    async with Fetcher(settings) as fetcher:
        alone = [await _fetch_healthy(fetcher, test_site, 300, 16) for _ in range(3)]
        slow = [
            asyncio.create_task(fetcher.fetch(Request(f"{hostile_process}drip?every=0.05&n={i}")))
            for i in range(200)
        ]
        await asyncio.sleep(0.3)  # let all 200 connect and start dripping
        beside = [await _fetch_healthy(fetcher, test_site, 300, 16) for _ in range(3)]
        dripping = sum(not t.done() for t in slow)
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
    reasons = Counter(e.reason if isinstance(e, FetchError) else repr(e) for e in outcomes)
    assert reasons == {"timeout": 200}
    alone_rate, beside_rate = statistics.median(alone), statistics.median(beside)
    print(
        f"\nhealthy host: {alone_rate:.0f} pages/s alone, {beside_rate:.0f} pages/s beside 200 "
        f"slow-drip fetches ({beside_rate / alone_rate:.0%}; {dripping} of 200 still dripping "
        "at the end)"
    )


# -- the garbage corpus: a real crawl of every case at once ------------------------------

SPIDER = """
from spiderfarm import Spider


class Garbage(Spider):
    name = "garbage"
    custom_settings = {SETTINGS!r}

    def parse(self, response):
        yield {{"url": response.request.url, "state": "index"}}
        yield from response.follow_all(css="a", callback=self.page, errback=self.failed)

    def page(self, response):
        nodes = len(response.css("*"))
        yield {{"url": response.request.url, "state": "ok", "nodes": nodes}}

    def failed(self, failure):
        yield {{"url": failure.url, "state": "failed", "reason": failure.reason}}
"""
CORPUS_SETTINGS = {
    **SETTINGS,
    "timeout_s": 4.0,  # the drips wait this long; the 12 MB page and the bombs need less
    "read_timeout_s": 1.0,
    "max_retries": 0,
    "per_host_concurrency": 32,
    "obey_robots": False,  # robots.txt is not what is under test; every URL is fetched
    # Half the cases fail without an HTTP answer, which backs a host off like a dead one;
    # the cap keeps that from stretching the crawl to minutes.
    "autothrottle_max_delay_s": 0.2,
}
MEMORY_BOUND_MB = 100


def _baseline_rss() -> int:
    """RSS of a fresh interpreter holding everything a worker imports."""
    code = (
        "import psutil, uvloop, aiohttp, parsel, lxml.html, spiderfarm.cli, spiderfarm.worker;"
        "print(psutil.Process().memory_info().rss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_environ(), capture_output=True, text=True,
        check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    return int(out.stdout)


def _run_sampling_workers(argv: list[str], out_dir: Path) -> tuple[int, str, str, dict[int, int]]:
    """Run the CLI, sampling every worker's RSS; (exit code, stdout, stderr, peak per pid)."""
    stdout, stderr = out_dir / "crawl.out", out_dir / "crawl.err"
    peaks: dict[int, int] = {}
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spiderfarm", *argv], cwd=REPO_ROOT,
            env=subprocess_environ(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                children = parent.children()  # crawl's children are its workers
            except psutil.NoSuchProcess:
                break
            for child in children:
                try:
                    rss = child.memory_info().rss
                    peaks[child.pid] = max(peaks.get(child.pid, 0), rss)
                except psutil.Error:
                    pass  # it exited between the listing and the look
            time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
    return code, stdout.read_text(), stderr.read_text(), peaks


def test_garbage_corpus_crawl(tmp_path: Path, hostile_process: str) -> None:
    spider = tmp_path / "garbage.py"
    spider.write_text(textwrap.dedent(SPIDER.format(SETTINGS=CORPUS_SETTINGS)))
    feed = tmp_path / "items.jsonl"
    baseline = _baseline_rss()
    code, out, err, peaks = _run_sampling_workers(
        ["crawl", str(spider), "-a", f"start_urls={hostile_process}", "--workers", "2",
         "-o", str(feed), "--log-level", "ERROR"],
        tmp_path,
    )  # fmt: skip
    assert code == 0, out + err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err

    # Every case URL ends in exactly one recorded state, the one its unit test names.
    async def case_urls() -> dict[str, str]:
        index = await fetch(hostile_process)
        return {a.attrib["href"]: a.css("::text").get("") for a in index.css("a.case")}

    names = {Request(url).url: name for url, name in asyncio.run(case_urls()).items()}
    items = read_items(feed)
    by_url = Counter(str(item["url"]) for item in items)
    assert by_url == Counter([hostile_process, *names]), "a URL is missing or recorded twice"
    outcomes = {
        names[str(i["url"])]: i.get("reason", i["state"]) for i in items if i["state"] != "index"
    }
    expected = {**FAILURES, **dict.fromkeys(USABLE, "ok")}
    assert outcomes == expected

    # ... and the summary the crawl prints counts the same.
    failed = Counter(FAILURES.values())
    summary = dict(re.findall(r"^\s+(failed/\w+|errors/\w+): (\d+)$", out, re.MULTILINE))
    assert summary == {f"failed/{reason}": str(n) for reason, n in failed.items()}
    pages, errors = len(USABLE) + 1, len(FAILURES)
    assert f"crawl finished: {pages} pages, {pages + errors} items, {errors} errors" in out

    assert len(peaks) == 2, f"sampled workers: {peaks}"
    growth_mb = {pid: (rss - baseline) / 2**20 for pid, rss in peaks.items()}
    print(f"\nworker RSS baseline {baseline / 2**20:.0f} MB; peak growth per worker (MB): "
          + ", ".join(f"{g:.0f}" for g in sorted(growth_mb.values())))  # fmt: skip
    assert max(growth_mb.values()) < MEMORY_BOUND_MB


LONG_HOST_SPIDER = """
from spiderfarm import Spider


class LongHost(Spider):
    name = "long_host"
    custom_settings = {"max_retries": 0, "obey_robots": False, "lease_timeout_s": 5}

    def parse(self, response):
        yield {"url": response.url, "state": "ok"}
        yield from response.follow_all(
            ["http://" + "a" * 300 + ".invalid/", "/ok/after"], errback=self.failed
        )

    def failed(self, failure):
        yield {"url": failure.url, "state": "failed", "reason": failure.reason}
"""


def test_a_link_to_an_over_long_host_costs_only_that_link(
    tmp_path: Path, hostile_process: str
) -> None:
    spider = tmp_path / "long_host.py"
    spider.write_text(textwrap.dedent(LONG_HOST_SPIDER))
    feed = tmp_path / "items.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "spiderfarm", "crawl", str(spider), "-a",
         f"start_urls={hostile_process}ok/start", "--workers", "1", "-o", str(feed),
         "-s", "max_seconds=15", "--log-level", "ERROR"],
        cwd=REPO_ROOT, env=subprocess_environ(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    states = {(i["url"], i.get("reason", i["state"])) for i in read_items(feed)}
    # The over-long host is either skipped where the link is made or fails by itself.
    assert {u for u, _ in states} - {"http://" + "a" * 300 + ".invalid/"} == {
        f"{hostile_process}ok/start",
        f"{hostile_process}ok/after",
    }
    assert "refused" not in result.stderr
