"""Farm-wide politeness: per-host scheduling, adaptive delays and robots.txt.

The end-to-end tests run real ``python -m spiderfarm crawl`` processes against in-process
sites (``ThreadedSites``) that record when each request arrived; the gaps between those
arrivals are the behaviour under test, so minimum gaps are asserted (never speed). The
unit tests drive ``politeness.Throttle`` and a ``Frontier`` with a fake clock, exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from spiderfarm import ipkeys
from spiderfarm.frontier import Frontier
from spiderfarm.http import W_CALLBACK, W_URL, HtmlResponse, Request
from spiderfarm.politeness import ROBOTS_CALLBACK, Origin, Robots, Settled, Throttle, origin_of
from spiderfarm.protocol import Lease, Outcome, PushEntry
from spiderfarm.server import FarmServer, ServerConfig
from spiderfarm.settings import Settings
from spiderfarm.urls import Fingerprinter, domain_of, host_of
from spiderfarm.worker import Crawl, PageRunner
from tests.farm import read_items, run_cli
from tests.sites import HITS, ROBOTS, SPANS, Hit, ThreadedSites, make_test_app

pytestmark = pytest.mark.timeout(120)

PAGES_SPIDER = """
import os
from spiderfarm import Spider


class Pages(Spider):
    name = "pages"
    follow = ""  # "all": follow every link; else space-separated URLs to follow ...
    follow_from = ""  # ... from this page only

    def parse(self, response):
        yield {"url": response.url, "h1": response.css("h1::text").get(), "pid": os.getpid()}
        if self.follow == "all":
            yield from response.follow_all(css="a")
        elif self.follow and response.url == self.follow_from:
            yield from response.follow_all(urls=self.follow.split())
"""

# Deterministic politeness: no jitter, no adaptive delay.
PLAIN = ["randomize_delay=false", "autothrottle=false"]


def pages_spider(directory: Path) -> Path:
    path = directory / "pages.py"
    path.write_text(textwrap.dedent(PAGES_SPIDER))
    return path


def crawl(
    spider: Path,
    urls: Sequence[str],
    out: Path,
    *,
    workers: int = 1,
    settings: Sequence[str] = (),
    args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    argv = ["crawl", str(spider), "-q", "--workers", str(workers), "-o", str(out),
            "-a", "start_urls=" + ",".join(urls)]  # fmt: skip
    for arg in args:
        argv += ["-a", arg]
    for setting in settings:
        argv += ["-s", setting]
    return run_cli(argv, timeout_s=90)


def times(hits: Sequence[Hit], prefix: str = "/") -> list[float]:
    return sorted(t for path, t, _ in hits if path.startswith(prefix))


def gaps(stamps: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


# -- farm-wide per-host scheduling -------------------------------------------------------


def test_three_workers_never_hit_one_host_closer_than_delay_nor_twice_at_once(
    tmp_path: Path,
) -> None:
    app = make_test_app()
    out = tmp_path / "out.jsonl"
    with ThreadedSites(app) as (site,):
        urls = [site.url(f"timed/p{i}?delay=0.05") for i in range(15)]
        result = crawl(
            pages_spider(tmp_path), urls, out, workers=3,
            settings=["per_host_concurrency=1", "delay_s=0.2", *PLAIN],
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 15 pages, 15 items, 0 errors" in result.stdout
    items = read_items(out)
    assert sorted(str(i["h1"]) for i in items) == sorted(f"p{i}" for i in range(15))
    hits = app[HITS]
    assert sorted(p for p, _, _ in hits) == sorted(
        ["/robots.txt", *(f"/timed/p{i}?delay=0.05" for i in range(15))]
    )
    least = min(gaps(times(hits)))
    per_worker = sorted(Counter(i["pid"] for i in items).values(), reverse=True)
    print(
        f"\n3 workers, per_host_concurrency=1, delay_s=0.2: minimum gap between two "
        f"requests to the host {least:.3f}s over {len(hits)} requests; pages per worker "
        f"{per_worker}"
    )
    assert least >= 0.2
    spans = sorted(app[SPANS], key=lambda span: span[1])
    assert len(spans) == 15
    for (first, _, ended), (second, started, _) in itertools.pairwise(spans):
        assert started >= ended, f"{first} and {second} were served at the same time"
    # The farm, not a single worker, did this crawl (else the test would prove little).
    assert len(per_worker) >= 2


def test_a_slow_host_does_not_hold_back_a_fast_one(tmp_path: Path) -> None:
    slow_app, fast_app = make_test_app(), make_test_app()
    out = tmp_path / "out.jsonl"
    with ThreadedSites(slow_app, fast_app) as (slow, fast):
        slow_urls = [slow.url(f"delay/0.5?n={i}") for i in range(8)]
        fast_urls = [fast.url(f"page/f{i}") for i in range(30)]
        # Interleaved, slow first: a FIFO crawler would wait for the slow host.
        urls = [u for pair in zip(slow_urls, fast_urls, strict=False) for u in pair]
        urls += fast_urls[len(slow_urls) :]
        result = crawl(
            pages_spider(tmp_path), urls, out,
            settings=["concurrency=4", "per_host_concurrency=2"],
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 38 pages, 38 items, 0 errors" in result.stdout
    fast_times = times(fast_app[HITS], "/page/")
    slow_times = times(slow_app[HITS], "/delay/")
    assert (len(fast_times), len(slow_times)) == (30, 8)
    fast_done = fast_times[-1]
    slow_before = sum(t <= fast_done for t in slow_times)
    print(
        f"\nfast host done {slow_times[-1] - fast_done:.2f}s before the slow host; "
        f"{slow_before} of 8 slow pages had started by then"
    )
    # Two slow pages at a time take 0.5 s: the fast host finished within the slow host's
    # first two rounds, while at least half of the slow host's pages were still to come.
    assert slow_before <= 4


def test_retry_after_holds_that_host_only(tmp_path: Path) -> None:
    held_app, busy_app = make_test_app(), make_test_app()
    out = tmp_path / "out.jsonl"
    with ThreadedSites(held_app, busy_app) as (held, busy):
        held_urls = [held.url("retry-after/a?seconds=3&fail=1"), held.url("page/a1"),
                     held.url("page/a2")]  # fmt: skip
        busy_urls = [busy.url(f"delay/0.2?n={i}") for i in range(20)]
        result = crawl(
            pages_spider(tmp_path), held_urls + busy_urls, out,
            settings=["per_host_concurrency=1"],
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 23 pages, 23 items, 0 errors" in result.stdout
    assert "retries/http_429: 1" in result.stdout
    held_hits = [(p, t) for p, t, _ in held_app[HITS] if p != "/robots.txt"]
    assert held_hits[0][0] == "/retry-after/a?seconds=3&fail=1"
    told_at = held_hits[0][1]
    after = sorted(t - told_at for _, t in held_hits[1:])
    assert len(after) == 3  # the retry, a1 and a2
    print(f"\nRetry-After: 3 -> that host's next request {after[0]:.2f}s later")
    assert after[0] >= 3.0
    busy_meanwhile = [t for t in times(busy_app[HITS], "/delay/") if told_at < t < told_at + 3]
    print(f"the other host was fetched {len(busy_meanwhile)} times during those 3 s")
    assert len(busy_meanwhile) >= 5


@pytest.mark.parametrize("key", ["domain", "host"])
def test_politeness_key_domain_groups_two_servers_of_one_domain(tmp_path: Path, key: str) -> None:
    apps = [make_test_app(), make_test_app()]
    out = tmp_path / "out.jsonl"
    with ThreadedSites(*apps) as sites:
        a, b = sites
        urls = [s.url(f"timed/{n}{i}?delay=0.1") for i in range(5) for n, s in (("a", a), ("b", b))]
        result = crawl(
            pages_spider(tmp_path), urls, out,
            settings=["per_host_concurrency=1", f"politeness_key={key}", "obey_robots=false"],
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 10 pages, 10 items, 0 errors" in result.stdout
    # 127.0.0.1:PORT1 and 127.0.0.1:PORT2 are two hosts but one domain.
    spans = sorted(apps[0][SPANS] + apps[1][SPANS], key=lambda span: span[1])
    overlaps = sum(b[1] < a[2] for a, b in itertools.pairwise(spans))
    if key == "domain":
        assert overlaps == 0
    else:  # two hosts are crawled side by side
        assert overlaps >= 1


@pytest.mark.parametrize(
    ("depth_priority", "order"),
    [
        (1, ["r", "r0", "r1", "r00", "r01", "r10", "r11", "r000", "r001", "r010", "r011",
             "r100", "r101", "r110", "r111"]),
        (-1, ["r", "r0", "r00", "r000", "r001", "r01", "r010", "r011", "r1", "r10", "r100",
              "r101", "r11", "r110", "r111"]),
    ],
    ids=["breadth-first", "depth-first"],
)  # fmt: skip
def test_depth_priority_orders_the_crawl(
    tmp_path: Path, depth_priority: int, order: list[str]
) -> None:
    app = make_test_app()
    out = tmp_path / "out.jsonl"
    with ThreadedSites(app) as (site,):
        result = crawl(
            pages_spider(tmp_path), [site.url("tree/r?depth=3")], out, args=["follow=all"],
            settings=[f"depth_priority={depth_priority}", "per_host_concurrency=1",
                      "obey_robots=false"],
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [path.split("/")[2].split("?")[0] for path, _, _ in app[HITS]] == order


def test_delay_holds_with_per_host_concurrency_above_one(tmp_path: Path) -> None:
    slow_app, app = make_test_app(), make_test_app()
    out = tmp_path / "out.jsonl"
    with ThreadedSites(slow_app, app) as (slow, site):
        # One slot, busy 1.5 s on the slow host, while the frontier leases the other host's
        # pages 0.3 s apart into the worker's prefetch buffer.
        urls = [slow.url("delay/1.5"), *(site.url(f"page/p{i}") for i in range(4))]
        result = crawl(
            pages_spider(tmp_path), urls, out,
            settings=["concurrency=1", "per_host_concurrency=2", "delay_s=0.3",
                      "obey_robots=false", *PLAIN],
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 5 pages, 5 items, 0 errors" in result.stdout
    least = min(gaps(times(app[HITS], "/page/")))
    print(f"\nper_host_concurrency=2, delay_s=0.3: minimum gap {least:.3f}s")
    assert least >= 0.3


# -- robots.txt, end to end ------------------------------------------------------------

RULES = """\
User-agent: otherbot
Disallow: /

User-agent: spiderfarm
Disallow: /page/private
Allow: /page/private-ok
"""


@dataclass
class RobotsCrawl:
    result: subprocess.CompletedProcess[str]
    hits: dict[str, list[Hit]]  # per site: rules, missing, down, slow
    items: list[dict[str, Any]]


@pytest.fixture(scope="module")
def robots_crawl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RobotsCrawl]:
    """One crawl, 3 workers, four hosts: robots.txt with rules, robots.txt 404, robots.txt
    503 (always), and robots.txt with ``Crawl-delay: 1``."""
    tmp = tmp_path_factory.mktemp("robots")
    apps = {name: make_test_app() for name in ("rules", "missing", "down", "slow")}
    apps["rules"][ROBOTS] = (200, RULES)
    apps["down"][ROBOTS] = (503, "try later")
    apps["slow"][ROBOTS] = (200, "User-agent: *\nCrawl-delay: 1\n")
    out = tmp / "out.jsonl"
    with ThreadedSites(*apps.values()) as servers:
        rules, missing, down, slow = servers
        urls = [
            *(rules.url(f"page/{p}") for p in ("public", "private", "private-x", "private-ok")),
            missing.url("page/public"), missing.url("page/private"),
            *(down.url(f"page/{p}") for p in "abc"),
            *(slow.url(f"page/s{i}") for i in range(4)),
        ]  # fmt: skip
        result = crawl(
            pages_spider(tmp), urls, out, workers=3,
            args=["follow=private-linked public-linked", f"follow_from={rules.url('page/public')}"],
            settings=[*PLAIN, "retry_backoff_s=0.1"],
        )  # fmt: skip
    yield RobotsCrawl(result, {name: app[HITS] for name, app in apps.items()}, read_items(out))


def paths(hits: Sequence[Hit]) -> list[str]:
    return [path for path, _, _ in hits]


def test_robots_crawl_summary(robots_crawl: RobotsCrawl) -> None:
    result = robots_crawl.result
    assert result.returncode == 0, result.stderr
    # rules: public, private-ok, public-linked; missing: 2; slow: 4. robots.txt is no page.
    assert "crawl finished: 9 pages, 9 items, 0 errors" in result.stdout
    assert "filtered/robots: 3" in result.stdout
    assert "filtered/robots_unavailable: 3" in result.stdout
    assert len(robots_crawl.items) == 9


def test_disallowed_paths_are_never_fetched(robots_crawl: RobotsCrawl) -> None:
    # Matched by the configured user agent (spiderfarm/0.1), not otherbot's group.
    assert sorted(paths(robots_crawl.hits["rules"])) == [
        "/page/private-ok", "/page/public", "/page/public-linked", "/robots.txt",
    ]  # fmt: skip


def test_robots_404_allows_everything(robots_crawl: RobotsCrawl) -> None:
    assert sorted(paths(robots_crawl.hits["missing"])) == [
        "/page/private", "/page/public", "/robots.txt",
    ]  # fmt: skip


def test_robots_503_fetches_nothing_else_from_that_host(robots_crawl: RobotsCrawl) -> None:
    # Tried once and retried max_retries (2) times, then the host's pages were dropped.
    assert paths(robots_crawl.hits["down"]) == ["/robots.txt"] * 3


def test_robots_fetched_once_per_host_with_three_workers(robots_crawl: RobotsCrawl) -> None:
    for name in ("rules", "missing", "slow"):
        assert paths(robots_crawl.hits[name]).count("/robots.txt") == 1, name


def test_crawl_delay_spaces_the_requests_to_that_host(robots_crawl: RobotsCrawl) -> None:
    hits = robots_crawl.hits["slow"]
    assert sorted(paths(hits)) == ["/page/s0", "/page/s1", "/page/s2", "/page/s3", "/robots.txt"]
    page_gaps = gaps(times(hits, "/page/"))
    after_robots = times(hits, "/page/")[0] - times(hits, "/robots.txt")[0]
    print(
        f"\nCrawl-delay: 1 -> gaps between pages {[round(g, 2) for g in page_gaps]}; "
        f"first page {after_robots:.2f}s after robots.txt"
    )
    assert min(page_gaps) >= 1.0


def test_crawl_delay_counts_the_robots_txt_fetch_too(robots_crawl: RobotsCrawl) -> None:
    hits = robots_crawl.hits["slow"]
    assert times(hits, "/page/")[0] - times(hits, "/robots.txt")[0] >= 1.0


# -- Throttle ----------------------------------------------------------------------------


def throttle(**settings: Any) -> Throttle:
    return Throttle(Settings.merge({"randomize_delay": False}, settings))


def test_throttle_averages_towards_latency_over_target_concurrency() -> None:
    t = throttle(autothrottle_target_concurrency=4)
    # (old delay + latency / target) / 2, AutoThrottle's rule
    assert t.update(0.0, 0.0, 200, 0.8, False, 0) == pytest.approx(0.1)
    assert t.update(0.1, 0.0, 200, 0.8, False, 0) == pytest.approx(0.15)
    assert t.update(1.0, 0.0, 200, 0.4, False, 0) == pytest.approx(0.55)


def test_throttle_never_goes_below_delay_s_or_the_crawl_delay_floor() -> None:
    t = throttle(delay_s=0.5)
    assert t.update(0.5, 0.0, 200, 0.001, False, 0) == 0.5
    assert t.update(0.5, 2.0, 200, 0.001, False, 0) == 2.0  # robots.txt Crawl-delay
    assert throttle().update(0.0, 1.5, 200, 0.001, False, 0) == 1.5


def test_throttle_errors_never_speed_a_host_up() -> None:
    t = throttle()
    assert t.update(2.0, 0.0, 404, 0.001, False, 0) == 2.0
    assert t.update(2.0, 0.0, 200, 0.001, False, 0) == pytest.approx(1.000125)


def test_throttle_doubles_on_429_and_503_at_least_to_one_second() -> None:
    t = throttle()
    for status in (429, 503):
        assert t.update(0.0, 0.0, status, 0.01, False, 0) == 1.0
        assert t.update(0.3, 0.0, status, 0.01, False, 0) == 1.0
        assert t.update(3.0, 0.0, status, 0.01, False, 0) == 6.0
    assert t.update(3.0, 0.0, 500, 0.01, False, 0) == 3.0  # other errors: not sped up


def test_throttle_backs_off_after_three_connection_failures_in_a_row() -> None:
    t = throttle()
    assert t.update(0.0, 0.0, 0, 0.01, True, 1) == 0.0
    assert t.update(0.0, 0.0, 0, 0.01, True, 2) == 0.0
    assert t.update(0.0, 0.0, 0, 0.01, True, 3) == 1.0
    assert t.update(1.0, 0.0, 0, 0.01, True, 4) == 2.0


def test_throttle_is_clamped_to_the_longest_delay() -> None:
    t = throttle(autothrottle_max_delay_s=5)
    assert t.update(4.0, 0.0, 503, 0.01, False, 0) == 5.0
    assert t.update(4.0, 0.0, 200, 30.0, False, 0) == 5.0
    # A delay_s above the longest adaptive delay wins: delay_s is the user's floor.
    assert throttle(delay_s=8, autothrottle_max_delay_s=5).update(8.0, 0, 503, 0.1, False, 0) == 8


def test_throttle_without_autothrottle_ignores_latency() -> None:
    t = throttle(autothrottle=False, delay_s=0.2)
    assert t.update(0.2, 0.0, 200, 30.0, False, 0) == 0.2
    assert t.update(0.2, 0.0, 200, 0.0001, False, 0) == 0.2


def test_throttle_without_autothrottle_returns_to_delay_s_after_an_error() -> None:
    t = throttle(autothrottle=False, delay_s=0.2)
    delay = t.update(0.2, 0.0, 503, 0.01, False, 0)
    for _ in range(10):
        delay = t.update(delay, 0.0, 200, 0.01, False, 0)
    assert delay == 0.2


def test_throttle_never_lowers_a_crawl_delay_above_the_longest_delay() -> None:
    assert throttle().update(120.0, 120.0, 200, 0.01, False, 0) == 120.0


def test_throttle_gap_randomises_between_half_and_one_and_a_half() -> None:
    assert throttle().gap(0.4) == 0.4
    assert throttle().gap(0.0) == 0.0
    jittered = Throttle(Settings.merge({"randomize_delay": True}))
    draws = [jittered.gap(2.0) for _ in range(200)]
    assert all(1.0 <= d <= 3.0 for d in draws)
    assert len(set(draws)) > 1
    assert jittered.gap(0.0) == 0.0


def test_origin_is_scheme_host_and_port() -> None:
    assert origin_of("http://Example.COM:8080/a?b") == "http://example.com:8080"
    assert origin_of("https://example.com/") == "https://example.com"
    origin = Origin()
    assert origin.allows("http://x/anything", "spiderfarm")  # nothing known: no rule
    origin.load("User-agent: *\nDisallow: /no\nCrawl-delay: 2.5\n")
    assert origin.state == "ready"
    assert not origin.allows("http://x/no/1", "spiderfarm/0.1")
    assert origin.allows("http://x/yes", "spiderfarm/0.1")
    assert origin.crawl_delay("spiderfarm/0.1") == 2.5


def test_robots_decides_what_becomes_of_each_request_and_queues_nothing() -> None:
    robots = Robots("spiderfarm/0.1", max_retries=1)
    held = [(n, "x", Request(f"http://x/{n}").to_wire(), 0) for n in (1, 2)]
    assert robots.admit("http://x/1") == "fetch_robots"  # first of its origin
    robots.hold("http://x/1", held[0])
    assert robots.admit("http://x/2") == "hold"
    robots.hold("http://x/2", held[1])
    assert robots.settle("http://x/robots.txt", "unavailable", "") == Settled(1, None, [])
    assert robots.admit("http://x/3") == "hold"  # still nothing allowed while it retries
    text = "User-agent: *\nDisallow: /no\nCrawl-delay: 2\n"
    assert robots.settle("http://x/robots.txt", "ok", text) == Settled(0, 2.0, held)
    assert robots.admit("http://x/no/1") == "drop_robots"
    assert robots.admit("http://x/yes") == "queue"
    assert robots.admit("http://y/") == "fetch_robots"
    assert robots.settle("http://y/robots.txt", "missing", "") == Settled(0, None, [])
    assert robots.admit("http://y/no/1") == "queue"  # 4xx: everything allowed
    assert robots.admit("http://z/") == "fetch_robots"
    assert robots.settle("http://z/robots.txt", "refused", "").retry == 1
    assert robots.settle("http://z/robots.txt", "refused", "") == Settled(0, None, [])
    assert robots.admit("http://z/a") == "drop_unavailable"  # out of retries


# -- the frontier's politeness, with a fake clock -------------------------------------

FP = Fingerprinter()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def entry(url: str, key_of: Any = host_of) -> PushEntry:
    return (FP.fingerprint(url), key_of(url), Request(url).to_wire())


def frontier(**settings: Any) -> tuple[Frontier, Clock]:
    clock = Clock()
    merged = Settings.merge({"randomize_delay": False, "autothrottle": False}, settings)
    return Frontier(merged, clock=clock), clock


def lease(f: Frontier, worker: str = "w1") -> list[Lease]:
    leases, refused, _ = f.exchange(worker, [], 100)
    assert refused == []
    return leases


def urls(leases: Sequence[Lease]) -> list[str]:
    return [wire[W_URL] for _, _, wire in leases]


def ack(f: Frontier, outcome: Outcome, worker: str = "w1", want: int = 0) -> str:
    leases, refused, state = f.exchange(worker, [outcome], want)
    assert refused == [] and leases == []
    return state


def robots_ack(lease_id: int, reason: str, text: str = "", status: int = 200) -> Outcome:
    return (lease_id, "robots", reason, [], [text] if text else [], (status, 0.01, 0.0))


def ok(lease_id: int, status: int = 200, latency: float = 0.01) -> Outcome:
    return (lease_id, "ok", "", [], [], (status, latency, 0.0))


def test_frontier_holds_requests_until_robots_is_known_and_fetches_it_once() -> None:
    f, _ = frontier()
    f.push([entry("http://a.test/1"), entry("http://a.test/2"), entry("http://b.test/1")])
    robots = lease(f)
    assert urls(robots) == ["http://a.test/robots.txt", "http://b.test/robots.txt"]
    assert {wire[W_CALLBACK] for _, _, wire in robots} == {ROBOTS_CALLBACK}
    f.push([entry("http://a.test/3")])
    assert lease(f, "w2") == []  # held: no second robots.txt, nothing fetched before it
    assert f.status()["queued"] == 4
    ack(f, robots_ack(robots[0][0], "ok", "User-agent: *\nDisallow: /2\n"))
    assert urls(lease(f)) == ["http://a.test/1", "http://a.test/3"]
    ack(f, robots_ack(robots[1][0], "missing", status=404))
    assert urls(lease(f)) == ["http://b.test/1"]
    f.push([entry("http://a.test/2/sub"), entry("http://a.test/4")])
    assert urls(lease(f)) == ["http://a.test/4"]
    stats = f.status()["stats"]
    assert (stats["filtered/robots"], stats["robots/ok"], stats["robots/missing"]) == (2, 1, 1)
    assert stats.get("pages", 0) == 0  # robots.txt is not a page


def test_frontier_robots_per_origin_scheme_host_and_port() -> None:
    f, _ = frontier()
    f.push([entry("http://a.test:81/x"), entry("http://a.test:82/x"), entry("https://a.test/x"),
            entry("http://a.test:81/y")])  # fmt: skip
    assert sorted(urls(lease(f))) == [
        "http://a.test:81/robots.txt", "http://a.test:82/robots.txt", "https://a.test/robots.txt",
    ]  # fmt: skip


def test_frontier_robots_unavailable_is_retried_then_the_origin_is_dropped() -> None:
    f, clock = frontier(max_retries=2, retry_backoff_s=0.1)
    f.push([entry("http://a.test/1"), entry("http://a.test/2")])
    for attempt in range(3):
        ((lease_id, got, wire),) = lease(f)
        assert (got, wire[W_URL]) == (attempt, "http://a.test/robots.txt")
        state = ack(f, robots_ack(lease_id, "unavailable", status=503))
        assert lease(f) == []  # nothing from the host while its robots.txt is unavailable
        clock.advance(30)  # past the retry backoff and the host's raised delay
    assert state == "finished"
    stats = f.status()["stats"]
    assert stats["robots/unavailable"] == 3
    assert stats["filtered/robots_unavailable"] == 2
    assert stats.get("pages", 0) == 0
    f.push([entry("http://a.test/3")])
    assert f.status()["stats"]["filtered/robots_unavailable"] == 3
    assert lease(f) == []


def test_frontier_robots_lease_of_a_lost_worker_counts_as_unavailable() -> None:
    f, clock = frontier(max_retries=1, retry_backoff_s=0.1)
    f.push([entry("http://a.test/1")])
    ((_, attempt, wire),) = lease(f, "w1")
    assert (attempt, wire[W_CALLBACK]) == (0, ROBOTS_CALLBACK)
    f.forget_worker("w1")
    clock.advance(5)
    ((lease_id, attempt, wire),) = lease(f, "w2")
    assert (attempt, wire[W_URL]) == (1, "http://a.test/robots.txt")
    ack(f, robots_ack(lease_id, "missing", status=404), worker="w2")
    assert urls(lease(f, "w2")) == ["http://a.test/1"]


def test_frontier_robots_matches_the_configured_user_agent() -> None:
    text = "User-agent: spiderfarm\nDisallow: /\n\nUser-agent: *\nDisallow: /only-others\n"
    for user_agent, expected in (("spiderfarm/0.1", []), ("otherbot/2", ["http://a.test/x"])):
        f, _ = frontier(user_agent=user_agent)
        f.push([entry("http://a.test/x")])
        ((lease_id, _, _),) = lease(f)
        ack(f, robots_ack(lease_id, "ok", text))
        assert urls(lease(f)) == expected, user_agent


def test_frontier_crawl_delay_spaces_one_host_even_with_autothrottle() -> None:
    f, clock = frontier(autothrottle=True)
    f.push([entry(f"http://a.test/{i}") for i in range(3)] + [entry("http://b.test/1")])
    got = lease(f)
    robots = dict(zip(urls(got), got, strict=True))
    delayed = "User-agent: *\nCrawl-delay: 2\n"
    ack(f, robots_ack(robots["http://a.test/robots.txt"][0], "ok", delayed))
    ack(f, robots_ack(robots["http://b.test/robots.txt"][0], "missing", status=404))
    assert f.status(detail=True)["hosts"]["a.test"]["delay_s"] == 2.0
    clock.advance(1.9)
    assert urls(lease(f)) == ["http://b.test/1"]  # a.test waits Crawl-delay after robots.txt
    clock.advance(0.11)
    first = lease(f)
    assert urls(first) == ["http://a.test/0"]
    ack(f, ok(first[0][0]))  # a fast answer: the adaptive delay stays at the floor
    clock.advance(1.9)
    assert lease(f) == []
    clock.advance(0.11)
    assert urls(lease(f)) == ["http://a.test/1"]
    assert f.status(detail=True)["hosts"]["a.test"]["delay_s"] == 2.0


def test_frontier_a_503_raises_that_hosts_delay_only() -> None:
    f, clock = frontier(autothrottle=True, obey_robots=False, per_host_concurrency=1)
    f.push([entry(u) for u in ("http://a.test/1", "http://b.test/1", "http://a.test/2",
                               "http://b.test/2")])  # fmt: skip
    a1, b1 = lease(f)
    assert urls([a1, b1]) == ["http://a.test/1", "http://b.test/1"]
    ack(f, (a1[0], "retry", "http_503", [], [], (503, 0.05, 0.0)))
    ack(f, ok(b1[0], latency=0.05))
    hosts = f.status(detail=True)["hosts"]
    assert hosts["a.test"]["delay_s"] == 1.0
    assert hosts["b.test"]["delay_s"] == pytest.approx(0.00625, abs=0.001)
    clock.advance(0.01)
    assert urls(lease(f)) == ["http://b.test/2"]
    clock.advance(0.97)
    assert lease(f) == []  # a.test waits out its raised delay
    clock.advance(0.03)
    assert urls(lease(f)) == ["http://a.test/1"]  # its retry, due by now, goes first


def test_frontier_a_burst_of_503s_doubles_the_delay_once() -> None:
    """Requests leased together went at one pace: the first 503 of them answers them all."""
    f, clock = frontier(autothrottle=False, obey_robots=False, per_host_concurrency=8,
                        max_retries=5, retry_backoff_s=0.01)  # fmt: skip

    def delay() -> float:
        return float(f.status(detail=True)["hosts"]["a.test"]["delay_s"])

    f.push([entry(f"http://a.test/{i}") for i in range(6)])
    burst = lease(f)
    assert len(burst) == 6
    clock.advance(0.1)
    for lease_id, _, _ in burst[:4]:  # four 503s of one burst: one doubling, to 1 s
        ack(f, (lease_id, "retry", "http_503", [], [], (503, 0.05, 0.0)))
    assert delay() == 1.0
    ack(f, ok(burst[4][0], latency=0.05))  # an ordinary answer: the fixed delay again
    assert delay() == 0.0
    ack(f, (burst[5][0], "retry", "http_503", [], [], (503, 0.05, 0.0)))
    assert delay() == 1.0  # one more of that burst: the slow-down again, not doubled
    clock.advance(1.01)
    ((lease_id, attempt, _),) = lease(f)  # one a second now: leased after the slow-down
    assert attempt == 1
    clock.advance(0.1)
    ack(f, (lease_id, "retry", "http_503", [], [], (503, 0.05, 0.0)))
    assert delay() == 2.0  # a 503 to a request sent at the new pace: doubles


def test_frontier_a_burst_of_connection_failures_backs_the_host_off_once() -> None:
    f, clock = frontier(obey_robots=False, per_host_concurrency=8, max_retries=0)
    f.push([entry(f"http://a.test/{i}") for i in range(6)])
    burst = lease(f)
    assert len(burst) == 6
    clock.advance(0.1)
    delays = []
    for lease_id, _, _ in burst:  # the third in a row backs off; the rest went with it
        ack(f, (lease_id, "retry", "refused", [], [], (0, 0.01, 0.0)))
        delays.append(f.status(detail=True)["hosts"]["a.test"]["delay_s"])
    assert delays == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # each doubling: 1, 2, 4, 8
    assert f.status(detail=True)["hosts"]["a.test"]["failures"] == 6


def test_frontier_backs_off_a_host_whose_connections_keep_failing() -> None:
    f, clock = frontier(autothrottle=True, obey_robots=False, per_host_concurrency=1,
                        max_retries=0)  # fmt: skip
    f.push([entry(f"http://a.test/{i}") for i in range(5)])
    delays = []
    for _ in range(4):
        clock.advance(10)
        ((lease_id, _, _),) = lease(f)
        ack(f, (lease_id, "retry", "refused", [], [], (0, 0.01, 0.0)))
        delays.append(f.status(detail=True)["hosts"]["a.test"]["delay_s"])
    assert delays == [0.0, 0.0, 1.0, 2.0]
    assert f.status(detail=True)["hosts"]["a.test"]["failures"] == 4
    clock.advance(10)
    ((lease_id, _, _),) = lease(f)
    ack(f, ok(lease_id))
    assert f.status(detail=True)["hosts"]["a.test"]["failures"] == 0  # one answer resets the count


def test_domain_of_groups_subdomains_by_registered_domain() -> None:
    assert domain_of("http://a.b.example.co.uk/x") == "example.co.uk"
    assert domain_of("http://www.example.com:8080/") == "example.com"
    assert domain_of("https://shop.example.com/") == "example.com"
    assert domain_of("http://example.com/") == "example.com"
    assert host_of("http://a.example.com:8080/") == "a.example.com:8080"


@pytest.mark.parametrize(
    ("url", "key"), [("http://127.0.0.1:8000/", "127.0.0.1"), ("http://localhost/", "localhost")]
)
def test_domain_of_an_ip_address_or_single_label_host_is_the_host(url: str, key: str) -> None:
    assert domain_of(url) == key


@pytest.mark.parametrize(("key_of", "leased"), [(domain_of, 1), (host_of, 2)])
def test_frontier_per_host_concurrency_applies_per_politeness_key(key_of: Any, leased: int) -> None:
    f, _ = frontier(obey_robots=False, per_host_concurrency=1)
    f.push([entry("http://a.example.com/1", key_of), entry("http://b.example.com/1", key_of)])
    assert len(lease(f)) == leased


def test_frontier_throttled_host_bursts_but_keeps_its_rate() -> None:
    """A throttle delay is a rate: an idle host may take a short burst in one exchange
    (bounded by per_host_concurrency), then starts average one per delay."""
    f, clock = frontier(autothrottle=True, obey_robots=False, per_host_concurrency=50)
    f.push([entry(f"http://a.test/{n}") for n in range(100)])
    (first,) = lease_n(f, 1)
    ack(f, ok(first[0], latency=0.08))  # delay -> (0 + 0.08 / 4) / 2 = 0.01 s
    assert f.status(detail=True)["hosts"]["a.test"]["delay_s"] == 0.01
    clock.advance(1.0)  # idle: up to BURST_S / delay = 25 starts are banked
    burst = lease(f)
    assert len(burst) == 26
    assert lease(f) == []  # the bank is spent: the next start is one delay away
    clock.advance(0.01)
    assert len(lease(f)) == 1


def lease_n(f: Frontier, n: int) -> list[Lease]:
    leases, _, _ = f.exchange("w1", [], n)
    return leases


# -- politeness by IP address -------------------------------------------------------------


def require_localhost_is_127_0_0_1() -> None:
    try:
        infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    except OSError as exc:
        pytest.skip(f"localhost does not resolve on this machine ({exc})")
    addresses = sorted({info[4][0] for info in infos})
    if addresses != ["127.0.0.1"]:
        pytest.skip(
            f"localhost resolves to {addresses} on this machine, not only to 127.0.0.1 "
            "(where the test site listens), so the two names are not one IP address here"
        )


NAMES = ("127.0.0.1", "localhost")
LEAVES = 5


class TwoNamesSite:
    """One site reached as http://127.0.0.1:PORT and http://localhost:PORT. The index
    ``/a/`` links to ``/a/0..4`` under the *other* name, ``/b/`` likewise, so the worker
    keys links it finds as well as the server's start requests. Every request sleeps
    0.1 s and the handler counts how many it was serving at once; robots.txt is per
    name: localhost disallows ``/a/3``."""

    def __init__(self) -> None:
        self.hits: Counter[tuple[str, str]] = Counter()  # (name, path) -> requests
        self.busy = 0
        self.most_busy = 0
        self.app = web.Application()
        self.app.router.add_get("/robots.txt", self._robots)
        self.app.router.add_get("/{section}/", self._index)
        self.app.router.add_get("/{section}/{n}", self._leaf)

    async def _serve(self, request: web.Request, text: str) -> web.Response:
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            self.hits[request.url.host or "", request.path] += 1
            await asyncio.sleep(0.1)
            return web.Response(text=text, content_type="text/html")
        finally:
            self.busy -= 1

    async def _robots(self, request: web.Request) -> web.Response:
        rules = "Disallow: /a/3" if request.url.host == "localhost" else "Disallow:"
        response = await self._serve(request, f"User-agent: *\n{rules}\n")
        response.content_type = "text/plain"
        return response

    async def _index(self, request: web.Request) -> web.Response:
        other = NAMES[1 - NAMES.index(request.url.host or "")]
        section, port = request.match_info["section"], request.url.port
        links = "".join(
            f'<a href="http://{other}:{port}/{section}/{n}">{n}</a>' for n in range(LEAVES)
        )
        return await self._serve(request, f"<h1>{section}</h1>{links}")

    async def _leaf(self, request: web.Request) -> web.Response:
        return await self._serve(request, f"<h1>{request.path}</h1>")


def two_names_crawl(
    tmp_path: Path, key: str, *settings: str
) -> tuple[TwoNamesSite, subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    site = TwoNamesSite()
    out = tmp_path / "out.jsonl"
    with ThreadedSites(site.app) as (server,):
        port = server.port
        urls = [f"http://127.0.0.1:{port}/a/", f"http://localhost:{port}/b/"]
        result = crawl(
            pages_spider(tmp_path), urls, out, workers=2, args=["follow=all"],
            settings=["per_host_concurrency=1", f"politeness_key={key}", *PLAIN, *settings],
        )  # fmt: skip
    return site, result, read_items(out) if out.exists() else []


def expected_pages(skip: Sequence[tuple[str, str]] = ()) -> Counter[tuple[str, str]]:
    pages = [("127.0.0.1", "/a/"), ("localhost", "/b/")]
    pages += [("localhost", f"/a/{n}") for n in range(LEAVES)]
    pages += [("127.0.0.1", f"/b/{n}") for n in range(LEAVES)]
    return Counter(page for page in pages if page not in skip)


@pytest.mark.parametrize(("key", "most_at_once"), [("ip", 1), ("host", 2)])
def test_politeness_key_ip_holds_one_site_under_two_names_to_its_concurrency(
    tmp_path: Path, key: str, most_at_once: int
) -> None:
    require_localhost_is_127_0_0_1()
    site, result, items = two_names_crawl(tmp_path, key, "obey_robots=false")
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 12 pages, 12 items, 0 errors" in result.stdout
    assert site.hits == expected_pages()  # every page exactly once, nothing else
    assert len(items) == 12
    print(f"\npoliteness_key={key}: at most {site.most_busy} requests at once at the site")
    # ip: 127.0.0.1 and localhost are one key, one request at a time across both names;
    # host: two keys, and both names were busy at once (so the ip case proves something).
    assert site.most_busy == most_at_once


def test_politeness_key_ip_keeps_robots_txt_per_origin(tmp_path: Path) -> None:
    require_localhost_is_127_0_0_1()
    site, result, items = two_names_crawl(tmp_path, "ip")
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 11 pages, 11 items, 0 errors" in result.stdout
    assert "filtered/robots: 1" in result.stdout
    # Each name's robots.txt was fetched once and obeyed for that name only: localhost
    # disallows /a/3; 127.0.0.1 would allow it (and serves /b/3).
    robots = Counter({("127.0.0.1", "/robots.txt"): 1, ("localhost", "/robots.txt"): 1})
    assert site.hits == expected_pages(skip=[("localhost", "/a/3")]) + robots
    assert len(items) == 11
    assert site.most_busy == 1  # the robots.txt fetches count against the IP's concurrency


# -- politeness by IP address: where the keys are made ------------------------------------

LINKS_SPIDER = """
from spiderfarm import Spider


class Links(Spider):
    name = "links"

    def parse(self, response):
        yield from response.follow_all(css="a")
"""


ANSWERS: dict[str, list[tuple[Any, ...]]] = {
    "a.test": [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::a", 0, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0)),
    ],
    "b.test": [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::b", 0, 0, 0))],
    "c.test": [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.3", 0))],
}


class FakeResolver:
    """Stands in for the event loop's ``getaddrinfo``: the ``ANSWERS`` (other names do
    not resolve), every question recorded, and the most it was answering at once."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self.busy = 0
        self.most_busy = 0

    async def getaddrinfo(self, host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        assert kwargs == {"type": socket.SOCK_STREAM}
        self.asked.append((host, port))
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.busy -= 1
        if host not in ANSWERS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return ANSWERS[host]


async def links_worker(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[PageRunner, FakeResolver]:
    spider_file = tmp_path / "links.py"
    spider_file.write_text(textwrap.dedent(LINKS_SPIDER))
    crawl = Crawl.offline(str(spider_file), settings={"politeness_key": key})
    worker = PageRunner(crawl.spider, crawl.settings, None, crawl.links)
    resolver = FakeResolver()
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver.getaddrinfo)
    return worker, resolver


async def page_keys(worker: PageRunner, url: str, *links: str) -> list[tuple[str, str]]:
    """(link, politeness key) of every request the spider yields from a page of links."""
    body = "".join(f'<a href="{link}">x</a>' for link in links).encode()
    request = Request(url)
    response = HtmlResponse(url, 200, {"Content-Type": "text/html"}, body, request)
    result = await worker.run_callback(request, response, "parse")
    return [(wire[W_URL], key) for _, key, wire in result.requests]


async def test_worker_ip_keys_look_each_host_up_once_all_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, resolver = await links_worker(tmp_path, "ip", monkeypatch)
    links = [
        "http://a.test/1", "http://a.test/2", "http://a.test:8080/3", "http://b.test/1",
        "https://dead.test/1", "https://dead.test/2", "http://192.0.2.9/x",
        "http://[2001:db8::9]:81/y", "http://gone.invalid/z",
    ]  # fmt: skip
    assert await page_keys(worker, "http://site.test/", *links) == [
        ("http://a.test/1", "192.0.2.1"),  # the first IPv4 address, after an IPv6 one
        ("http://a.test/2", "192.0.2.1"),
        ("http://a.test:8080/3", "192.0.2.1"),
        ("http://b.test/1", "[2001:db8::b]"),  # no IPv4: the first IPv6 address
        ("https://dead.test/1", "dead.test"),  # does not resolve: its host name
        ("https://dead.test/2", "dead.test"),
        ("http://192.0.2.9/x", "192.0.2.9"),  # IP literals need no lookup
        ("http://[2001:db8::9]:81/y", "[2001:db8::9]"),
        ("http://gone.invalid/z", "gone.invalid"),  # never resolves: not even asked
    ]
    # One lookup per scheme and authority, all four at once.
    assert sorted(resolver.asked) == [
        ("a.test", 80), ("a.test", 8080), ("b.test", 80), ("dead.test", 443),
    ]  # fmt: skip
    assert resolver.most_busy == 4
    # Answers and failures are cached: later pages cost no lookup.
    resolver.asked.clear()
    later = await page_keys(worker, "http://site.test/2", "http://a.test/9", "https://dead.test/9")
    assert later == [("http://a.test/9", "192.0.2.1"), ("https://dead.test/9", "dead.test")]
    assert resolver.asked == []


async def test_worker_ip_key_lookups_are_shared_by_pages_processed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, resolver = await links_worker(tmp_path, "ip", monkeypatch)
    pages = await asyncio.gather(
        *(page_keys(worker, f"http://site.test/{n}", f"http://c.test/{n}") for n in range(5))
    )
    assert pages == [[(f"http://c.test/{n}", "192.0.2.3")] for n in range(5)]
    assert resolver.asked == [("c.test", 80)]


async def test_worker_looks_up_a_host_that_did_not_resolve_again_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipkeys, "LOOKUP_RETRY_S", 0.0)
    worker, resolver = await links_worker(tmp_path, "ip", monkeypatch)
    for n in range(2):
        keys = await page_keys(worker, "http://site.test/", f"http://dead.test/{n}")
        assert keys == [(f"http://dead.test/{n}", "dead.test")]
    assert resolver.asked == [("dead.test", 80), ("dead.test", 80)]


@pytest.mark.parametrize("key", ["host", "domain"])
async def test_worker_host_and_domain_keys_never_look_anything_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    worker, resolver = await links_worker(tmp_path, key, monkeypatch)
    keys = await page_keys(worker, "http://site.test/", "http://a.test:8080/1", "http://b.test/")
    key_of = host_of if key == "host" else domain_of
    assert keys == [(url, key_of(url)) for url in ("http://a.test:8080/1", "http://b.test/")]
    assert resolver.asked == []


def test_server_seeds_ip_keys_looking_each_authority_up_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_localhost_is_127_0_0_1()
    asked: list[str] = []
    real = socket.getaddrinfo

    def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    urls = ["http://127.0.0.1:9/a", "http://localhost:9/b", "http://localhost:9/c",
            "http://[::1]:9/d", "http://gone.invalid:9/e"]  # fmt: skip
    server = FarmServer(
        ServerConfig(
            spider_ref=str(pages_spider(tmp_path)), spider_args={"start_urls": ",".join(urls)},
            overrides={"politeness_key": "ip", "obey_robots": False},
        )
    )  # fmt: skip
    try:
        assert server.seed() == 5
        hosts = server.frontier.status(detail=True)["hosts"]
    finally:
        server.stop()
    assert {key: host["queued"] for key, host in hosts.items()} == {
        "127.0.0.1": 3, "[::1]": 1, "gone.invalid:9": 1,
    }  # fmt: skip
    assert asked == ["localhost"]


def test_a_hostile_crawl_delay_is_capped_and_named(tmp_path: Path) -> None:
    """``Crawl-delay: 1e9`` used to stall its host forever; it is capped to
    max_crawl_delay_s, and the host is named in the summary and in status."""
    app = make_test_app()
    app[ROBOTS] = (200, "User-agent: *\nCrawl-delay: 1e9\n")
    out = tmp_path / "out.jsonl"
    with ThreadedSites(app) as (site,):
        result = crawl(
            pages_spider(tmp_path), [site.url(f"page/c{i}") for i in range(3)], out,
            settings=[*PLAIN, "max_crawl_delay_s=0.3"],
        )  # fmt: skip
        hits = app[HITS]
        host = site.url("").split("/")[2]
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 3 pages, 3 items, 0 errors" in result.stdout
    assert f"host crawl-delay capped: {host} (robots.txt asks 1e+09s, obeyed 0.3s" in result.stdout
    starts = sorted(t for path, t, _ in hits if path.startswith("/page/"))
    assert len(starts) == 3
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.3 * 0.95


def test_crawl_delay_nan_or_negative_asks_for_nothing() -> None:
    origin = Origin()
    origin.load("User-agent: *\nCrawl-delay: nan\n")
    assert origin.crawl_delay("spiderfarm/0.1") == 0.0
    origin.load("User-agent: *\nCrawl-delay: -5\n")
    assert origin.crawl_delay("spiderfarm/0.1") == 0.0
