"""Downloader middlewares and item pipelines, on real workers against local sites.

The crawls run a real server (``FarmServer`` in this process, so that the test reads every
counter of the frontier, not only those the summary prints) and real worker processes;
the sites record every request they see. The chain classes are also driven directly.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spiderfarm import DropItem, Request, Response, SettingsError
from spiderfarm.errors import FetchError
from spiderfarm.middleware import Middlewares, Pipelines, ProxyMiddleware, load_components
from spiderfarm.security import AUTHKEY_ENV
from spiderfarm.server import FarmServer, ServerConfig
from tests.farm import read_items, run_cli
from tests.sites import (
    HITS,
    PROXIED,
    ROBOTS,
    ThreadedSites,
    make_proxy_app,
    make_test_app,
    subprocess_environ,
)

pytestmark = pytest.mark.timeout(120)

# One source for the sync and the async forms: "ASYNC " becomes "" or "async ".
COMPONENTS = """
import os

from spiderfarm import DropItem, HtmlResponse, IgnoreRequest, Request


def note(request, label):
    meta = request.meta if request.meta is not None else {}
    meta.setdefault("trace", []).append(label)
    request.meta = meta


def made_up(request, text):
    body = f"<h1>{text}</h1>".encode()
    return HtmlResponse(request.url, 200, {"Content-Type": "text/html"}, body, request)


def log(spider, event):
    with open(spider.log_path, "a", encoding="utf-8") as fh:
        fh.write(f"{event} {os.getpid()}\\n")


class First:
    ASYNC def process_request(self, request, spider):
        note(request, "first.request")
        if request.url.endswith("/page/ignored"):
            raise IgnoreRequest("not wanted")
        if request.url.endswith("/page/moved"):
            return Request(request.url + "-here", callback="parse")
        return None

    ASYNC def process_response(self, request, response, spider):
        note(request, "first.response")
        return response

    ASYNC def process_exception(self, request, exception, spider):
        note(request, "first.exception")
        return None


class Second:
    ASYNC def process_request(self, request, spider):
        note(request, "second.request")
        if "/page/boom-request" in request.url:
            raise RuntimeError("middleware bug on purpose")
        if request.url.endswith("/page/cached"):
            return made_up(request, "from the cache")
        return None

    ASYNC def process_response(self, request, response, spider):
        note(request, "second.response")
        if request.url.endswith("/page/boom-response"):
            raise RuntimeError("middleware bug on purpose")
        return response

    ASYNC def process_exception(self, request, exception, spider):
        note(request, f"second.exception:{exception.reason}")
        return made_up(request, "recovered")


class Tag:
    ASYNC def open_spider(self, spider):
        log(spider, "open")

    ASYNC def close_spider(self, spider):
        log(spider, "close")

    ASYNC def process_item(self, item, spider):
        log(spider, "item")
        if item["h1"] == "drop-me":
            raise DropItem("not wanted")
        item["chain"] = ["tag"]
        return item


class Check:
    ASYNC def process_item(self, item, spider):
        if item["h1"] == "explode":
            raise ValueError("pipeline bug on purpose")
        item["chain"].append("check")
        return item
"""

SPIDER = """
from spiderfarm import Request, Spider


class MiddlewareSpider(Spider):
    name = "mw"
    base = ""
    boom = ""
    dead = ""
    log_path = ""

    def start_requests(self):
        for path in ("plain", "cached", "moved", "ignored", "boom-response", "drop-me",
                     "explode"):
            yield Request(self.base + "page/" + path)
        for n in range(3):
            yield Request(self.boom + f"page/boom-request-{n}")
        yield Request(self.dead + "page/refused")

    def parse(self, response):
        yield {"h1": response.css("h1::text").get(), "trace": response.meta.get("trace", [])}
"""

ATTRIBUTES = """
    downloader_middlewares = [First, Second]
    item_pipelines = [Tag, Check]
"""


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FarmRun:
    status: dict[str, Any]
    codes: list[int]
    stderr: str  # every worker's


def run_farm(
    spider: Path,
    spider_args: dict[str, str],
    overrides: dict[str, str],
    workdir: Path,
    workers: int = 2,
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
) -> FarmRun:
    """Crawl with a ``FarmServer`` in this process and ``workers`` worker processes."""
    authkey = secrets.token_bytes(32)
    server = FarmServer(
        ServerConfig(
            spider_ref=str(spider), spider_args=spider_args, overrides=overrides,
            output=str(workdir / "out.jsonl"), authkey=authkey,
        )
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    logs = [workdir / f"worker{i}.err" for i in range(workers)]
    try:
        server.seed()
        host, port = server.listen()
        worker_env = {**(env or subprocess_environ()), AUTHKEY_ENV: authkey.hex()}
        for path in logs:
            with path.open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "spiderfarm.worker", "--connect", f"{host}:{port}"],
                        env=worker_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )  # fmt: skip
        deadline = time.monotonic() + timeout_s

        def tick() -> None:
            if time.monotonic() > deadline:
                server.frontier.close("test_timeout")
            if all(p.poll() is not None for p in procs):
                server.frontier.close("workers_exited")

        server.wait(on_tick=tick, tick_s=0.05)
        server.linger(len(procs), timeout_s=10)
        codes = [p.wait(15) for p in procs]
        status = server.frontier.status(detail=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.stop()
    return FarmRun(status, codes, "".join(path.read_text() for path in logs))


@dataclass
class MiddlewareCrawl:
    run: FarmRun
    items: list[dict[str, Any]]
    hits: list[str]  # paths the main site saw
    boom_hits: list[str]  # paths the boom host saw
    boom_key: str  # the host whose requests a middleware fails
    pipeline_log: list[tuple[str, str]]  # (event, pid)


@pytest.fixture(scope="module", params=["sync-by-setting", "async-by-attribute"])
def mw_crawl(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MiddlewareCrawl]:
    """The same middlewares and pipelines twice: plain methods given by import path with
    ``downloader_middlewares`` / ``item_pipelines`` settings, and ``async`` methods given
    as classes in spider attributes."""
    tmp = tmp_path_factory.mktemp("mw")
    log_path = tmp / "pipelines.log"
    env = subprocess_environ()
    if request.param == "sync-by-setting":
        mods = tmp / "mods"
        mods.mkdir()
        (mods / "mwmod.py").write_text(COMPONENTS.replace("ASYNC ", ""))
        env["PYTHONPATH"] = f"{mods}{os.pathsep}{env['PYTHONPATH']}"
        source = SPIDER
        overrides = {
            "downloader_middlewares": "mwmod.First,mwmod.Second",
            "item_pipelines": "mwmod.Tag,mwmod.Check",
        }
    else:
        source = COMPONENTS.replace("ASYNC ", "async ") + SPIDER + ATTRIBUTES
        overrides = {}
    spider = tmp / "mwspider.py"
    spider.write_text(textwrap.dedent(source))
    site_app, boom_app = make_test_app(), make_test_app()
    dead = f"http://127.0.0.1:{closed_port()}/"
    with ThreadedSites(site_app, boom_app) as (site, boom):
        boom_key = f"127.0.0.1:{boom.port}"
        args = {"base": site.url(), "boom": boom.url(), "dead": dead, "log_path": str(log_path)}
        run = run_farm(spider, args, {"obey_robots": "false", **overrides}, tmp, env=env)
    yield MiddlewareCrawl(
        run=run,
        items=read_items(tmp / "out.jsonl"),
        hits=[p for p, _, _ in site_app[HITS]],
        boom_hits=[p for p, _, _ in boom_app[HITS]],
        boom_key=boom_key,
        pipeline_log=[(ln.split()[0], ln.split()[1]) for ln in log_path.read_text().splitlines()],
    )


TRACE = ["first.request", "second.request", "second.response", "first.response"]


def test_workers_finish_and_every_outcome_is_counted(mw_crawl: MiddlewareCrawl) -> None:
    run = mw_crawl.run
    assert run.codes == [0, 0], run.stderr
    assert run.status["close_reason"] == "finished"
    stats = run.status["stats"]
    assert stats["items"] == 4
    assert stats["failed/middleware_error"] == 4  # three in process_request, one in ..._response
    assert stats["filtered/ignored"] == 1
    assert stats["requests/rescheduled"] == 1
    assert stats["items/dropped"] == 1
    assert stats["errors/pipeline_error"] == 1
    assert run.status["dead_letters"] == []


def test_requests_run_in_order_and_responses_in_reverse(mw_crawl: MiddlewareCrawl) -> None:
    by_h1 = {item["h1"]: item for item in mw_crawl.items}
    assert sorted(by_h1) == ["from the cache", "moved-here", "plain", "recovered"]
    assert by_h1["plain"]["trace"] == TRACE
    assert by_h1["moved-here"]["trace"] == TRACE  # the new request went round again


def test_a_response_from_process_request_skips_the_fetch(mw_crawl: MiddlewareCrawl) -> None:
    item = next(i for i in mw_crawl.items if i["h1"] == "from the cache")
    assert item["trace"] == TRACE  # the response chain still runs, as in Scrapy
    assert "/page/cached" not in mw_crawl.hits


def test_a_request_from_process_request_is_scheduled_instead(mw_crawl: MiddlewareCrawl) -> None:
    assert "/page/moved" not in mw_crawl.hits
    assert mw_crawl.hits.count("/page/moved-here") == 1


def test_process_exception_turns_a_failure_into_a_response(mw_crawl: MiddlewareCrawl) -> None:
    item = next(i for i in mw_crawl.items if i["h1"] == "recovered")
    # Exceptions go through the chain in reverse; the first answer stops it.
    assert item["trace"] == [
        "first.request", "second.request", "second.exception:refused", "second.response",
        "first.response",
    ]  # fmt: skip
    assert "failed/refused" not in mw_crawl.run.status["stats"]


def test_ignore_request_drops_quietly(mw_crawl: MiddlewareCrawl) -> None:
    assert "/page/ignored" not in mw_crawl.hits
    assert "IgnoreRequest" not in mw_crawl.run.stderr
    assert "not wanted" not in mw_crawl.run.stderr


def test_exactly_the_expected_pages_were_fetched(mw_crawl: MiddlewareCrawl) -> None:
    assert sorted(mw_crawl.hits) == [
        "/page/boom-response", "/page/drop-me", "/page/explode", "/page/moved-here", "/page/plain",
    ]  # fmt: skip
    assert mw_crawl.boom_hits == []  # process_request failed before any fetch


def test_a_middleware_error_is_counted_and_its_traceback_logged_once(
    mw_crawl: MiddlewareCrawl,
) -> None:
    stderr = mw_crawl.run.stderr
    assert stderr.count("RuntimeError: middleware bug on purpose") == 4
    for url in [f"{mw_crawl.boom_key}/page/boom-request-{n}" for n in range(3)]:
        assert stderr.count(f"downloader middleware failed on http://{url}\n") == 1
    assert stderr.count("/page/boom-response\n") == 1
    # One traceback per failure: four here, and the pipeline's (see below).
    assert stderr.count("Traceback (most recent call last)") == 5


def test_middleware_errors_do_not_back_off_the_host(mw_crawl: MiddlewareCrawl) -> None:
    # Three failures in a row, but none of them the host's: it answered nothing because
    # nothing was sent. Only connection failures back a host off.
    host = mw_crawl.run.status["hosts"][mw_crawl.boom_key]
    assert (host["failures"], host["delay_s"]) == (0, 0.0)


def test_ignored_and_rescheduled_requests_are_not_pages(mw_crawl: MiddlewareCrawl) -> None:
    # plain, cached, moved-here, recovered, drop-me, explode
    assert mw_crawl.run.status["stats"]["pages"] == 6


def test_pipelines_modify_drop_and_count_in_order(mw_crawl: MiddlewareCrawl) -> None:
    assert all(item["chain"] == ["tag", "check"] for item in mw_crawl.items)
    stderr = mw_crawl.run.stderr
    assert stderr.count("ValueError: pipeline bug on purpose") == 1
    assert stderr.count("item pipeline failed on an item from") == 1
    assert "not wanted" not in stderr  # DropItem is quiet


def test_pipelines_open_and_close_once_per_worker(mw_crawl: MiddlewareCrawl) -> None:
    by_pid: dict[str, list[str]] = {}
    for event, pid in mw_crawl.pipeline_log:
        by_pid.setdefault(pid, []).append(event)
    assert len(by_pid) == 2
    for events in by_pid.values():
        assert events[0] == "open" and events[-1] == "close"
        assert events.count("open") == events.count("close") == 1
    # 6 items from callbacks: plain, cached, moved-here, recovered, drop-me, explode
    assert sum(events.count("item") for events in by_pid.values()) == 6


# -- ProxyMiddleware, through a real forward proxy ------------------------------------

PAGES_SPIDER = """
from spiderfarm import Spider


class Pages(Spider):
    name = "pages"

    def parse(self, response):
        yield {"h1": response.css("h1::text").get()}
"""


@dataclass
class ProxyCrawl:
    result: subprocess.CompletedProcess[str]
    proxied: list[str]
    hits: list[tuple[str, str | None]]  # (path, Via header) as the site saw them
    base: str


@pytest.fixture(scope="module")
def proxy_crawl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyCrawl]:
    tmp = tmp_path_factory.mktemp("proxy")
    spider = tmp / "pages.py"
    spider.write_text(textwrap.dedent(PAGES_SPIDER))
    site_app, proxy_app = make_test_app(), make_proxy_app()
    with ThreadedSites(site_app, proxy_app) as (site, proxy):
        urls = [site.url(f"page/p{i}") for i in range(3)]
        result = run_cli(
            ["crawl", str(spider), "-q", "--workers", "1", "-o", str(tmp / "out.jsonl"),
             "-a", "start_urls=" + ",".join(urls), "-a", f"proxy={proxy.url()}",
             "-s", "downloader_middlewares=spiderfarm.middleware.ProxyMiddleware"],
            timeout_s=60,
        )  # fmt: skip
        base = site.url()
    yield ProxyCrawl(
        result,
        list(proxy_app[PROXIED]),
        [(path, headers.get("Via")) for path, _, headers in site_app[HITS]],
        base,
    )


def test_proxy_middleware_sends_every_page_through_the_proxy(proxy_crawl: ProxyCrawl) -> None:
    result = proxy_crawl.result
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 3 pages, 3 items, 0 errors" in result.stdout
    pages = sorted(u for u in proxy_crawl.proxied if not u.endswith("/robots.txt"))
    assert pages == [f"{proxy_crawl.base}page/p{i}" for i in range(3)]
    via = {path: v for path, v in proxy_crawl.hits if path.startswith("/page/")}
    assert via == {f"/page/p{i}": "1.1 spiderfarm-test-proxy" for i in range(3)}


def test_robots_txt_goes_through_the_proxy_too(proxy_crawl: ProxyCrawl) -> None:
    assert f"{proxy_crawl.base}robots.txt" in proxy_crawl.proxied
    assert ("/robots.txt", "1.1 spiderfarm-test-proxy") in proxy_crawl.hits


# -- robots.txt and a raising middleware ---------------------------------------------------

ROBOTS_SPIDER = """
from spiderfarm import Spider


class NeedsSession:
    raised = False

    def process_request(self, request, spider):
        # A middleware that assumes every request carries meta: robots.txt has none. It
        # fails once, on the first robots.txt fetch; the retry goes through.
        if request.url.endswith("/robots.txt") and not NeedsSession.raised:
            NeedsSession.raised = True
            request.meta["session"]
        return None


class Robots(Spider):
    name = "robots_mw"
    downloader_middlewares = [NeedsSession]

    def parse(self, response):
        yield {"url": response.url}
        yield from response.follow_all(css="a")
"""


def test_a_middleware_failing_on_robots_txt_counts_it_unavailable(tmp_path: Path) -> None:
    spider = tmp_path / "robots_mw.py"
    spider.write_text(textwrap.dedent(ROBOTS_SPIDER))
    app = make_test_app()
    app[ROBOTS] = (200, "User-agent: *\nDisallow: /links/3\n")
    with ThreadedSites(app) as (site,):
        run = run_farm(
            spider, {"start_urls": site.url("links/0?max=4")},
            {"obey_robots": "true", "retry_backoff_s": "0.05"}, tmp_path, workers=1,
        )  # fmt: skip
        robots_url = site.url("robots.txt")
    assert run.codes == [0], run.stderr
    assert run.status["close_reason"] == "finished"
    stats = run.status["stats"]
    assert (stats["robots/unavailable"], stats["robots/ok"]) == (1, 1)
    assert "acks/bad_kind" not in stats
    assert stats["pages"] == 4  # /links/0..4 but /links/3
    assert stats["filtered/robots"] == 1
    assert sorted(p for p, _, _ in app[HITS]) == [
        "/links/0?max=4", "/links/1?max=4", "/links/2?max=4", "/links/4?max=4", "/robots.txt",
    ]  # fmt: skip
    assert run.stderr.count(f"downloader middleware failed on {robots_url}") == 1
    assert run.stderr.count("Traceback") == 1
    assert "internal error" not in run.stderr


# -- configuration errors -----------------------------------------------------------------


def test_a_bad_import_path_stops_the_worker_with_a_clear_message(tmp_path: Path) -> None:
    spider = tmp_path / "pages.py"
    spider.write_text(textwrap.dedent(PAGES_SPIDER))
    result = run_cli(
        ["crawl", str(spider), "-q", "--workers", "1", "-a", "start_urls=http://127.0.0.1:9/",
         "-s", "downloader_middlewares=nosuchmodule.Missing"],
        timeout_s=60,
    )  # fmt: skip
    assert result.returncode == 2  # a configuration error, as for a bad pipeline
    assert "error: 1 worker(s) stopped before crawling" in result.stderr
    assert (
        "error: worker: cannot load component 'nosuchmodule.Missing': No module named "
        "'nosuchmodule'; give a full import path (package.module.Class) importable on every "
        "worker"
    ) in result.stderr
    assert "all workers exited before the crawl finished" in result.stderr
    assert "crawl workers_exited: 0 pages" in result.stdout


def test_load_components_explains_what_is_wrong() -> None:
    with pytest.raises(SettingsError, match=r"cannot load component 'json\.NoSuchThing'"):
        load_components(["json.NoSuchThing"], None)
    with pytest.raises(SettingsError, match="cannot load component 'Bare'"):
        load_components(["Bare"], None)
    with pytest.raises(SettingsError, match=r"component 'json\.dumps' is not a class"):
        load_components(["json.dumps"], None)


def test_load_components_builds_with_from_spider_when_there_is_one() -> None:
    class Spiderish:
        proxy = "http://127.0.0.1:3128"

    (proxy, decoder) = load_components(
        ["spiderfarm.middleware.ProxyMiddleware", "json.JSONDecoder"], Spiderish()
    )
    assert isinstance(proxy, ProxyMiddleware) and proxy.proxy == "http://127.0.0.1:3128"
    assert type(decoder).__name__ == "JSONDecoder"


# -- the chains, driven directly --------------------------------------------------------


class Recorder:
    def __init__(self, name: str, calls: list[str], answer: Any = None) -> None:
        self.name, self.calls, self.answer = name, calls, answer

    def process_request(self, request: Request, spider: Any) -> Any:
        self.calls.append(f"{self.name}.request")
        return self.answer

    async def process_response(self, request: Request, response: Response, spider: Any) -> Any:
        self.calls.append(f"{self.name}.response")
        return response

    async def process_exception(self, request: Request, exc: Exception, spider: Any) -> Any:
        self.calls.append(f"{self.name}.exception")
        return self.answer


def response_for(request: Request) -> Response:
    return Response(request.url, 200, {}, b"<h1>x</h1>", request)


async def test_chain_order_and_short_circuits() -> None:
    calls: list[str] = []
    request = Request("http://a.test/")
    chain = Middlewares([Recorder(n, calls) for n in "abc"], spider=None)
    assert await chain.request(request) is None
    response = response_for(request)
    assert await chain.response(request, response) is response
    assert await chain.exception(request, FetchError(request.url, "refused")) is None
    assert calls == [
        "a.request", "b.request", "c.request", "c.response", "b.response", "a.response",
        "c.exception", "b.exception", "a.exception",
    ]  # fmt: skip
    calls.clear()
    answer = response_for(request)
    chain = Middlewares([Recorder("a", calls), Recorder("b", calls, answer), Recorder("c", calls)],
                        spider=None)  # fmt: skip
    assert await chain.request(request) is answer
    assert await chain.exception(request, FetchError(request.url, "refused")) is answer
    assert calls == ["a.request", "b.request", "c.exception", "b.exception"]


async def test_chain_refuses_a_return_value_of_the_wrong_type() -> None:
    request = Request("http://a.test/")
    chain = Middlewares([Recorder("a", [], answer="oops")], spider=None)
    with pytest.raises(TypeError, match=r"Recorder\.process_request returned str; return None"):
        await chain.request(request)


async def test_pipelines_chain_and_drop_on_none() -> None:
    class Add:
        def process_item(self, item: dict[str, Any], spider: Any) -> dict[str, Any]:
            return {**item, "n": item["n"] + 1}

    class Double:
        async def process_item(self, item: dict[str, Any], spider: Any) -> dict[str, Any]:
            return {**item, "n": item["n"] * 2}

    class Forget:
        def process_item(self, item: dict[str, Any], spider: Any) -> None:
            return None

    assert await Pipelines([Add(), Double()], spider=None).process({"n": 1}) == {"n": 4}
    assert await Pipelines([Double(), Add()], spider=None).process({"n": 1}) == {"n": 3}
    with pytest.raises(DropItem, match=r"Forget\.process_item returned None"):
        await Pipelines([Add(), Forget()], spider=None).process({"n": 1})


async def test_a_pipeline_failing_to_close_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    class Broken:
        def close_spider(self, spider: Any) -> None:
            raise OSError("disk full")

    class Fine:
        async def close_spider(self, spider: Any) -> None:
            closed.append("fine")

    await Pipelines([Broken(), Fine()], spider=None).close()
    assert closed == ["fine"]
    assert "pipeline Broken failed to close" in caplog.text
    assert caplog.text.count("OSError: disk full") == 1


def test_proxy_middleware_keeps_a_requests_own_proxy() -> None:
    mw = ProxyMiddleware("http://127.0.0.1:3128")
    plain = Request("http://a.test/")
    own = Request("http://a.test/", meta={"proxy": "http://127.0.0.1:8888", "k": 1})
    mw.process_request(plain, None)
    mw.process_request(own, None)
    assert plain.meta == {"proxy": "http://127.0.0.1:3128"}
    assert own.meta == {"proxy": "http://127.0.0.1:8888", "k": 1}
    nothing = Request("http://a.test/")
    ProxyMiddleware("").process_request(nothing, None)
    assert nothing.meta is None
