"""Sessions across the farm and Scrapy's per-request meta controls (issue 13): a login on
one worker honoured by every worker, separate cookie jars, a jar that outlives its
worker, HTTP basic auth, and dont_retry, max_retry_times, dont_redirect, redirect_urls,
handle_httpstatus_list/_all, download_timeout, redirect dedup and dont_filter."""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from spiderfarm import Request
from spiderfarm.errors import FetchError
from spiderfarm.fetch import Fetcher, Sessions
from spiderfarm.frontier import Frontier
from spiderfarm.frontier.sessions import Jars
from spiderfarm.journal import Journal
from spiderfarm.protocol import MAX_COOKIE_BYTES, MAX_COOKIES_PER_JAR, check_cookie_changes
from spiderfarm.request import InvalidRequest
from spiderfarm.settings import Settings
from spiderfarm.spider import Spider
from spiderfarm.worker.links import Links
from spiderfarm.worker.page import PageRunner
from tests.farm import ServerProcess, read_items, run_cli, start_worker, wait_all, write_key
from tests.session_site import LOGINS, MEMBER_PAGES, make_session_app
from tests.sites import COUNTERS, HITS, SiteServer, ThreadedSites, make_test_app

pytestmark = pytest.mark.timeout(180)

SPIDERS = Path(__file__).parent / "session_spiders"


def crawl(site: SiteServer, out: Path, *args: str, workers: int = 3) -> str:
    result = run_cli(
        ["crawl", "members", "--spiders-dir", str(SPIDERS), "--workers", str(workers),
         "-a", f"base={site.url().rstrip('/')}", "-o", str(out), *args]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def member_hits(site: SiteServer) -> list[tuple[str, dict[str, str]]]:
    return [(path, headers) for path, _, headers in site.app[HITS] if "/members/page/" in path]


# -- sessions across the farm ----------------------------------------------------------


def test_a_login_on_one_worker_is_honoured_by_all_three(tmp_path: Path) -> None:
    out = tmp_path / "members.jsonl"
    with ThreadedSites(make_session_app()) as (site,):
        stdout = crawl(site, out)
        logins = list(site.app[LOGINS])
        hits = member_hits(site)
    assert f"{MEMBER_PAGES + 2} pages, {MEMBER_PAGES} items, 0 errors" in stdout, stdout
    items = read_items(out)
    assert sorted(int(str(i["n"])) for i in items) == list(range(1, MEMBER_PAGES + 1))
    assert {i["user"] for i in items} == {"ann"}
    assert [user for user, _ in logins] == ["ann"]  # one login served the whole farm
    assert len(hits) == MEMBER_PAGES  # no page was refused (403) and fetched again


def test_two_cookiejars_in_one_crawl_stay_separate(tmp_path: Path) -> None:
    out = tmp_path / "jars.jsonl"
    with ThreadedSites(make_session_app()) as (site,):
        stdout = crawl(site, out, "-a", "users=ann,bob", "-a", "jars=1")
        logins = sorted(user for user, _ in site.app[LOGINS])
    assert f"{2 * MEMBER_PAGES} items, 0 errors" in stdout, stdout
    items = read_items(out)
    by_jar = collections.Counter((i["jar"], i["user"], i["as"]) for i in items)
    assert by_jar == {("ann", "ann", "ann"): MEMBER_PAGES, ("bob", "bob", "bob"): MEMBER_PAGES}
    assert logins == ["ann", "bob"]


def test_a_jar_survives_the_death_of_the_worker_that_made_it(tmp_path: Path) -> None:
    """kill -9 the worker that logged in, mid-crawl: the others keep the session."""
    out = tmp_path / "members.jsonl"
    key = write_key(tmp_path)
    with ThreadedSites(make_session_app()) as (site,):
        server = ServerProcess(
            [str(SPIDERS / "members.py"), "-a", f"base={site.url().rstrip('/')}",
             "-a", "delay=0.05", "-s", "per_host_concurrency=3", "-s", "worker_timeout_s=2",
             "-s", "autothrottle=false", "-o", str(out)], key, tmp_path,
        )  # fmt: skip
        workers = [start_worker(server.address, key) for _ in range(3)]
        try:
            deadline = time.monotonic() + 60
            while not site.app[LOGINS] or len(member_hits(site)) < 30:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.02)
            pid = int(site.app[LOGINS][0][1])
            killed = next(w for w in workers if w.pid == pid)
            os.kill(pid, signal.SIGKILL)
            killed_at = len(member_hits(site))
            codes = wait_all(workers, 90)
            assert server.wait(30) == 0, server.output()
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
            server.stop()
        hits = member_hits(site)
        logins = list(site.app[LOGINS])
    assert codes[workers.index(killed)] == -signal.SIGKILL
    assert [c for w, c in zip(workers, codes, strict=True) if w is not killed] == [0, 0]
    assert len(logins) == 1  # nobody had to log in again
    assert len(hits) > killed_at + 50  # the survivors crawled on, with the session
    items = read_items(out)
    assert sorted({int(str(i["n"])) for i in items}) == list(range(1, MEMBER_PAGES + 1))
    assert len(items) == MEMBER_PAGES and {i["user"] for i in items} == {"ann"}


# -- meta controls, redirects --------------------------------------------------------------


def test_meta_controls_and_redirect_dedup_through_the_farm(tmp_path: Path) -> None:
    out = tmp_path / "controls.jsonl"
    with ThreadedSites(make_test_app()) as (site,):
        result = run_cli(
            ["crawl", "controls", "--spiders-dir", str(SPIDERS), "--workers", "2",
             "-a", f"base={site.url().rstrip('/')}", "-o", str(out), "--log-level", "ERROR"]
        )  # fmt: skip
        counters = dict(site.app[COUNTERS])
        paths = [path for path, _, _ in site.app[HITS]]
        base = site.url().rstrip("/")
    assert result.returncode == 0, result.stdout + result.stderr
    items = read_items(out)
    by_k: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    for item in items:
        by_k[item["k"]].append(item)
    # /a and /b both redirect to /page/c: one /page/c page; the dont_filter one is not deduped.
    page_c = [i for i in items if i.get("url") == f"{base}/page/c"]
    assert sorted(str(i["k"]) for i in page_c if i["k"] != "df") in (["a"], ["b"])
    assert len(page_c) == 2 and [i["k"] for i in page_c].count("df") == 1
    # A redirect to a URL the crawl has as a request of its own gives no second copy.
    page_d = [i for i in items if i.get("url") == f"{base}/page/d"]
    assert page_d == [
        {"k": None, "url": f"{base}/page/d", "status": 200, "redirect_urls": None,
         "redirect_reasons": None, "redirect_times": None}
    ]  # fmt: skip
    assert "to-d" not in by_k
    assert by_k["chain"] == [
        {"k": "chain", "url": f"{base}/page/final", "status": 200,
         "redirect_urls": [f"{base}/redirect/2", f"{base}/redirect/1"],
         "redirect_reasons": [302, 302], "redirect_times": 2}
    ]  # fmt: skip
    assert by_k["noredirect"] == [{"k": "noredirect", "failed": "http_302"}]
    assert [(i["status"], i["url"]) for i in by_k["kept301"]] == [
        (302, f"{base}/redirect/1?keep=1")
    ]
    assert [i["status"] for i in by_k["all"]] == [404]
    assert [i["status"] for i in by_k["list"]] == [410]
    assert by_k["unhandled"] == [{"k": "unhandled", "failed": "http_418"}]
    assert by_k["dont_retry"] == [{"k": "dont_retry", "failed": "http_503"}]
    assert by_k["max0"] == [{"k": "max0", "failed": "http_503"}]
    assert [i["status"] for i in by_k["max3"]] == [200]  # 3 retries, over max_retries=2
    assert [i["status"] for i in by_k["plain"]] == [200]
    assert (counters["flaky/dr"], counters["flaky/m0"], counters["flaky/m3"]) == (1, 1, 4)
    assert counters["flaky/plain"] == 2
    assert by_k["timeout"] == [{"k": "timeout", "failed": "timeout"}]
    assert paths.count("/delay/2") == 3  # the timeout is retried, as any timeout
    assert "/page/final" not in [p for p in paths if "no=1" in p]
    assert "filtered/redirect_duplicate" in result.stdout or len(page_c) == 2


# -- in-process: the worker's jars, HTTP auth, bad values ---------------------------------


async def test_request_cookies_are_merged_into_the_jar_and_dont_merge_keeps_apart(
    test_site: SiteServer,
) -> None:
    sessions = Sessions()
    async with Fetcher(Settings(), sessions=sessions) as fetcher:
        check = test_site.url("/check-cookie")
        first = await fetcher.fetch(Request(check, cookies={"session": "x1"}))
        again = await fetcher.fetch(Request(test_site.url("/check-cookie")))
        alone = await fetcher.fetch(
            Request(test_site.url("/check-cookie"), cookies={"session": "own"},
                    meta={"dont_merge_cookies": True})
        )  # fmt: skip
        other = await fetcher.fetch(Request(test_site.url("/check-cookie"), meta={"cookiejar": 2}))
        await fetcher.fetch(Request(test_site.url("/set-cookie"), meta={"cookiejar": 2}))
        after = await fetcher.fetch(Request(test_site.url("/check-cookie"), meta={"cookiejar": 2}))
        default = await fetcher.fetch(Request(test_site.url("/check-cookie")))
    text = [r.css("#cookie::text").get() for r in (first, again, alone, other, after, default)]
    assert text == ["x1", "x1", "own", "none", "abc", "x1"]
    changes = sessions.take_changes()
    values = [(jar, name, cookie["value"] if cookie else None) for jar, _, name, cookie in changes]
    assert values == [(None, "session", "x1"), (2, "session", "abc")]
    # A worker that never saw them takes the jars as the frontier holds them.
    jars = Jars(collections.Counter())
    jars.apply(changes)
    other_worker = Sessions()
    lease = (1, 0, Request("http://x.test/", meta={"cookiejar": 2}).to_wire())
    other_worker.load(jars.updates("w2", [lease]))
    assert other_worker.cookies(2) == sessions.cookies(2)
    assert other_worker.cookies(None) == {}  # not leased one of the default jar's requests


class AuthSpider(Spider):
    name = "auth"
    http_user, http_pass = "ann", "pw"

    def parse(self, response: Any) -> Any:
        yield {"auth": response.json().get("Authorization")}


@pytest.mark.parametrize(
    ("domain", "expected"),
    [("127.0.0.1", ["Basic YW5uOnB3", None]), (None, ["Basic YW5uOnB3", "Basic YW5uOnB3"]),
     ("example.com", [None, None])],
)  # fmt: skip
async def test_http_auth_goes_only_to_http_auth_domain(
    test_site: SiteServer, domain: str | None, expected: list[str | None]
) -> None:
    spider = AuthSpider()
    spider.http_auth_domain = domain  # type: ignore[attr-defined]
    settings = Settings(obey_robots=False)
    async with Fetcher(settings) as fetcher:
        runner = PageRunner(spider, settings, fetcher, Links(settings))
        got = []
        for host in ("127.0.0.1", "localhost"):
            url = test_site.url("/echo-headers").replace("127.0.0.1", host)
            outcome = await runner.process((1, 0, Request(url).to_wire()))
            assert outcome[1] == "ok", outcome
            got.append(__import__("json").loads(outcome[4][0])["auth"])
    assert got == expected


async def test_http_auth_domain_defaults_to_the_first_requests_host(test_site: SiteServer) -> None:
    spider = AuthSpider()
    settings = Settings(obey_robots=False)
    async with Fetcher(settings) as fetcher:
        runner = PageRunner(spider, settings, fetcher, Links(settings))
        local = test_site.url("/echo-headers").replace("127.0.0.1", "localhost")
        outcomes = [await runner.process((n, 0, Request(u).to_wire()))
                    for n, u in enumerate([local, test_site.url("/echo-headers")])]  # fmt: skip
    auths = [__import__("json").loads(o[4][0])["auth"] for o in outcomes]
    assert auths == ["Basic YW5uOnB3", None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cookies": "a=1"}, "cookies of http://x.test/ must be a dict of names to values"),
        ({"cookies": [{"name": "a"}]}, "each cookie in a list must be a dict with 'name'"),
        ({"cookies": [{"name": "a", "value": "1", "expires": 3}]}, "attribute 'expires'"),
        ({"cookies": {"a": None}}, "cookie 'a' must be a str"),
        ({"meta": {"max_retry_times": -1}}, "meta['max_retry_times'] of http://x.test/ must"),
        ({"meta": {"download_timeout": "5"}}, "meta['download_timeout'] of http://x.test/ must"),
        ({"meta": {"handle_httpstatus_list": [200, "404"]}}, "meta['handle_httpstatus_list']"),
        ({"meta": {"cookiejar": ["a"]}}, "meta['cookiejar'] of http://x.test/ must be a str"),
    ],
)  # fmt: skip
def test_bad_cookies_and_meta_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Request("http://x.test/", **kwargs)
    assert message in str(info.value)


def test_cookies_travel_on_the_wire_and_replace() -> None:
    cookie = {"name": "a", "value": 1, "domain": "x.test", "secure": True}
    r = Request("http://x.test/", cookies=[cookie])
    back = Request.from_wire(r.to_wire())
    assert back.cookies == [{"name": "a", "value": "1", "domain": "x.test", "secure": True}]
    assert back.meta is None and r.replace(url="http://y.test/").cookies == r.cookies
    assert Request.from_wire(Request("http://x.test/").to_wire()).cookies is None


async def test_a_meta_value_made_bad_after_creation_fails_that_request_only(
    test_site: SiteServer,
) -> None:
    spider = AuthSpider()
    settings = Settings(obey_robots=False)
    request = Request(test_site.url("/page/x"))
    request.meta = {"download_timeout": -1}
    async with Fetcher(settings) as fetcher:
        runner = PageRunner(spider, settings, fetcher, Links(settings))
        outcome = await runner.process((7, 0, request.to_wire()))
    assert outcome[:3] == (7, "fail", "bad_request")
    assert not test_site.app[HITS]


def test_the_frontier_caps_what_a_worker_can_make_it_hold() -> None:
    stats: collections.Counter[str] = collections.Counter()
    jars = Jars(stats)
    cookie = {"key": "k", "value": "v", "coded_value": "v"}
    jars.apply([(None, f"h{n}.test|/", "k", cookie) for n in range(MAX_COOKIES_PER_JAR + 5)])
    assert jars.detail()["cookies"] == MAX_COOKIES_PER_JAR and stats["cookies/dropped"] == 5
    jars.apply([(None, "h0.test|/", "k", None)])  # a deletion frees room
    assert jars.detail()["cookies"] == MAX_COOKIES_PER_JAR - 1
    with pytest.raises(ValueError, match="a cookie over 8192 bytes"):
        check_cookie_changes([(None, "a|/", "n", {"value": "x" * MAX_COOKIE_BYTES})])
    with pytest.raises(ValueError, match="a cookie jar must be None, an int or a str"):
        check_cookie_changes([((1, 2), "a|/", "n", None)])
    with pytest.raises(ValueError, match="attributes must be strings, bools or numbers"):
        check_cookie_changes([(None, "a|/", "n", {"value": ["x"]})])


async def test_fetch_error_for_a_timeout_set_in_meta(test_site: SiteServer) -> None:
    async with Fetcher(Settings()) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(Request(test_site.url("/delay/2"), meta={"download_timeout": 0.2}))
        fast = await fetcher.fetch(Request(test_site.url("/delay/0.3")))
    assert info.value.reason == "timeout" and fast.status == 200


def test_jars_are_journaled_and_a_resumed_frontier_has_them(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "job")
    frontier = Frontier(Settings(obey_robots=False), journaled=True)
    sid = {"key": "sid", "value": "s1", "coded_value": "s1", "path": "/", "host_only": True}
    gone = {"key": "old", "value": "x", "coded_value": "x", "expires_timestamp": 1.0}
    changes = [("ann", "a.test|/", "sid", sid), ("ann", "a.test|/", "old", gone)]
    frontier.exchange("w1", [], 0, changes)  # type: ignore[arg-type]
    ops, _, _, _, _, _ = frontier.checkpoint(dict)
    journal.commit(ops, {"spider": "x", "stats": "{}"})
    journal.close()
    again = Journal(tmp_path / "job")
    resumed = Frontier(Settings(obey_robots=False), journaled=True)
    resumed.restore(again.fingerprints(), again.queued(), {}, [], jars=again.jars())
    assert resumed.cookies("ann") == {"a.test|/": {"sid": sid}}  # the expired one is gone
    assert resumed.cookies(None) == {}
    lease = (1, 0, Request("http://a.test/", meta={"cookiejar": "ann"}).to_wire())
    assert resumed.jar_updates("w9", [lease]) == {"ann": (1, {"a.test|/": {"sid": sid}})}
    assert resumed.jar_updates("w9", [lease]) == {}  # sent once
    again.close()
