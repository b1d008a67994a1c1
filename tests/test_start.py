"""Start requests as a stream the frontier pulls from, every form Scrapy spiders write
them in, and the spider's state reaching every worker."""

from __future__ import annotations

import json
import logging
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiderfarm.errors import SpiderfarmError
from spiderfarm.server import FarmServer, ServerConfig
from spiderfarm.spider import Spider
from spiderfarm.start import (
    START_QUEUE_TARGET,
    STATE_MAX_BYTES,
    apply_spider_state,
    spider_state,
)
from tests.test_frontier import ok

HEADER = """
import asyncio
import spiderfarm as scrapy
from spiderfarm import Request, Spider
"""


@pytest.fixture
def servers() -> Iterator[list[FarmServer]]:
    made: list[FarmServer] = []
    yield made
    for server in made:
        server.stop()


def make_server(
    tmp_path: Path, servers: list[FarmServer], body: str, **overrides: object
) -> FarmServer:
    path = tmp_path / "spider_under_test.py"
    path.write_text(HEADER + textwrap.dedent(body))
    server = FarmServer(
        ServerConfig(
            spider_ref=str(path),
            output=str(tmp_path / "out.jsonl"),
            overrides={"obey_robots": False, **overrides},
        )
    )
    servers.append(server)
    return server


def lease_urls(server: FarmServer, want: int = 100) -> list[str]:
    leases, _, _ = server.frontier.exchange("w1", [], want)
    server.frontier.exchange("w1", [ok(lease_id) for lease_id, _, _ in leases], 0)
    return [wire[0] for _, _, wire in leases]


FORMS = {
    "start_requests returns a list": """
        class S(Spider):
            name = "s"
            def start_requests(self):
                return [Request(f"http://a.test/{n}") for n in range(3)]
    """,
    "start_requests is a generator": """
        class S(Spider):
            name = "s"
            def start_requests(self):
                for n in range(3):
                    yield Request(f"http://a.test/{n}")
    """,
    "start_requests is an async generator": """
        class S(Spider):
            name = "s"
            async def start_requests(self):
                for n in range(3):
                    await asyncio.sleep(0)
                    yield Request(f"http://a.test/{n}")
    """,
    "start_requests is a coroutine returning a list": """
        class S(Spider):
            name = "s"
            async def start_requests(self):
                await asyncio.sleep(0)
                return [Request(f"http://a.test/{n}") for n in range(3)]
    """,
    "async def start()": """
        class S(scrapy.Spider):
            name = "s"
            async def start(self):
                for n in range(3):
                    yield scrapy.Request(f"http://a.test/{n}")
    """,
    "start() wins over start_requests()": """
        class S(Spider):
            name = "s"
            async def start(self):
                for n in range(3):
                    yield Request(f"http://a.test/{n}")
            def start_requests(self):
                yield Request("http://a.test/never")
    """,
    "start_urls only": """
        class S(Spider):
            name = "s"
            start_urls = [f"http://a.test/{n}" for n in range(3)]
    """,
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_start_form_gives_its_requests(
    form: str, tmp_path: Path, servers: list[FarmServer]
) -> None:
    server = make_server(tmp_path, servers, FORMS[form])
    assert server.seed() == 3
    assert sorted(lease_urls(server)) == [f"http://a.test/{n}" for n in range(3)]
    assert server.frontier.tick() == "finished"


def test_a_start_that_returns_none_finishes_at_once(
    tmp_path: Path, servers: list[FarmServer]
) -> None:
    server = make_server(
        tmp_path,
        servers,
        """
        class S(Spider):
            name = "s"
            def start_requests(self):
                return None
        """,
    )
    assert server.seed() == 0
    assert server.frontier.tick() == "finished"


ENDLESS = """
    import itertools

    class S(Spider):
        name = "s"
        yielded = 0
        closed = False

        async def start(self):
            try:
                for n in itertools.count():
                    type(self).yielded = n + 1
                    yield Request(f"http://h{n % 50}.test/{n}")
            finally:
                type(self).closed = True
"""


def test_start_requests_stream_as_the_queue_runs_low(
    tmp_path: Path, servers: list[FarmServer]
) -> None:
    server = make_server(tmp_path, servers, ENDLESS, per_host_concurrency=1000)
    # Only one queue's worth is read before the farm starts, never the whole stream.
    assert server.seed() == START_QUEUE_TARGET
    spider_cls = type(server.spider)
    assert spider_cls.yielded == START_QUEUE_TARGET  # type: ignore[attr-defined]
    server.listen()
    leased = 0
    deadline = time.monotonic() + 20
    while leased < 20_000:  # 4x the first batch: the feeder keeps the queue filled
        assert time.monotonic() < deadline, f"the feeder stalled after {leased} leases"
        leased += len(lease_urls(server, 1000))
    deadline = time.monotonic() + 10
    while server.frontier.status()["queued"] < START_QUEUE_TARGET // 2:
        assert time.monotonic() < deadline, "the feeder did not refill the queue"
        time.sleep(0.01)
    # It reads ahead by one queue, not more.
    assert spider_cls.yielded <= leased + START_QUEUE_TARGET + 1000  # type: ignore[attr-defined]
    server.frontier.close("shutdown")
    server.stop()
    assert spider_cls.closed is True  # type: ignore[attr-defined]  # its finally ran


def test_a_slow_start_stream_keeps_the_crawl_open(
    tmp_path: Path, servers: list[FarmServer]
) -> None:
    server = make_server(
        tmp_path,
        servers,
        f"""
        import time

        class S(Spider):
            name = "s"
            def start_requests(self):
                for n in range({START_QUEUE_TARGET}):
                    yield Request(f"http://h{{n % 50}}.test/{{n}}")
                time.sleep(0.5)  # a slow cursor, after the first batch was taken
                yield Request("http://a.test/late")
        """,
        per_host_concurrency=1000,
    )
    server.seed()
    server.listen()
    first = lease_urls(server, START_QUEUE_TARGET)
    assert server.frontier.tick() == "running"  # queue empty, but the stream is not done
    deadline = time.monotonic() + 10
    late: list[str] = []
    while not late:
        assert time.monotonic() < deadline
        late = lease_urls(server)
        time.sleep(0.02)
    assert len(first) == START_QUEUE_TARGET
    assert late == ["http://a.test/late"]
    deadline = time.monotonic() + 5
    while server.frontier.tick() != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_items_from_start_reach_the_feed(tmp_path: Path, servers: list[FarmServer]) -> None:
    server = make_server(
        tmp_path,
        servers,
        """
        class S(Spider):
            name = "s"
            async def start(self):
                yield {"kind": "start", "n": 1}
                yield Request("http://a.test/0")
        """,
    )
    assert server.seed() == 1
    assert server.frontier.stats["items"] == 1
    server.stop()
    servers.clear()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"kind": "start", "n": 1}]


def test_a_bad_first_start_value_stops_before_the_farm_starts(
    tmp_path: Path, servers: list[FarmServer]
) -> None:
    server = make_server(
        tmp_path,
        servers,
        """
        class S(Spider):
            name = "s"
            def start_requests(self):
                yield "http://a.test/just-a-string"
        """,
    )
    with pytest.raises(SpiderfarmError, match=r"yielded 'http://a.test/just-a-string'; it must"):
        server.seed()


def test_a_bad_start_url_is_named(tmp_path: Path, servers: list[FarmServer]) -> None:
    server = make_server(
        tmp_path,
        servers,
        """
        class S(Spider):
            name = "s"
            start_urls = ["ftp://a.test/file"]
        """,
    )
    with pytest.raises(SpiderfarmError, match=r"spider 's': bad start request: .*ftp://a.test"):
        server.seed()


def test_a_bad_later_start_value_costs_only_itself(
    tmp_path: Path, servers: list[FarmServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(
        tmp_path,
        servers,
        f"""
        class S(Spider):
            name = "s"
            def start_requests(self):
                for n in range({START_QUEUE_TARGET + 10}):
                    yield Request(f"http://h{{n % 50}}.test/{{n}}")
                yield 42
                yield Request("http://a.test/after-the-bad-one")
                raise RuntimeError("the cursor broke")
        """,
        per_host_concurrency=1000,
    )
    assert server.seed() == START_QUEUE_TARGET
    server.listen()
    urls: list[str] = []
    deadline = time.monotonic() + 10
    with caplog.at_level(logging.ERROR, logger="spiderfarm.start"):
        while server.frontier.tick() != "finished":
            assert time.monotonic() < deadline
            urls += lease_urls(server, 1000)
    assert len(urls) == START_QUEUE_TARGET + 11
    assert "http://a.test/after-the-bad-one" in urls
    assert server.frontier.stats["errors/start_requests"] == 2  # the 42, and the raise
    messages = [r.getMessage() for r in caplog.records]
    assert any("yielded 42; it must yield Request objects or items" in m for m in messages)
    assert any("RuntimeError: the cursor broke" in m for m in messages)


def test_max_pages_ends_an_endless_start_stream(
    tmp_path: Path, servers: list[FarmServer]
) -> None:
    server = make_server(tmp_path, servers, ENDLESS, max_pages=30, per_host_concurrency=1000)
    server.seed()
    server.listen()
    assert len(lease_urls(server, 100)) == 30
    assert server.frontier.tick() == "finished"
    assert server.frontier.close_reason == "max_pages"
    server.stop()
    assert type(server.spider).closed is True  # type: ignore[attr-defined]


# -- the spider's state ---------------------------------------------------------------
class Stateful(Spider):
    name = "stateful"

    def parse(self, response: object) -> None:
        return None


def test_spider_state_sends_plain_attributes_and_names_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spider = Stateful(category="books")
    spider.host = "example.com"  # type: ignore[attr-defined]
    spider.limits = {"pages": 3}  # type: ignore[attr-defined]
    spider.handler = lambda: None  # type: ignore[attr-defined]
    spider.big = "x" * (STATE_MAX_BYTES + 1)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="spiderfarm.start"):
        state = spider_state(spider)
    assert sorted(state) == ["category", "host", "limits"]  # never the logger
    (record,) = caplog.records
    assert "handler (a function)" in record.getMessage()
    assert re.search(r"big \(1,048,5\d\d bytes pickled: too big\)", record.getMessage())

    worker_spider = Stateful()
    apply_spider_state(worker_spider, state)
    assert worker_spider.host == "example.com"  # type: ignore[attr-defined]
    assert worker_spider.limits == {"pages": 3}  # type: ignore[attr-defined]
    assert worker_spider.category == "books"  # type: ignore[attr-defined]


def test_spider_state_never_replaces_a_method() -> None:
    spider = Stateful()
    apply_spider_state(spider, {"parse": b"\x80\x05K\x01."})
    assert callable(spider.parse)


def test_spider_state_that_does_not_load_keeps_the_workers_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spider = Stateful()
    spider.host = "mine"  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="spiderfarm.start"):
        apply_spider_state(spider, {"host": b"not a pickle"})
    assert spider.host == "mine"  # type: ignore[attr-defined]
    assert "host (UnpicklingError" in caplog.records[0].getMessage()
