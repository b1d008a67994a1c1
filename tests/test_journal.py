"""The server's crawl state through failures: journal writes that fail, resumes, a close asked
for by a signal handler."""

from __future__ import annotations

import sqlite3
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spiderfarm.http import Request
from spiderfarm.journal import Journal
from spiderfarm.server import FarmServer, ServerConfig
from spiderfarm.urls import Fingerprinter, host_of
from tests.test_frontier import item, ok

SPIDER = """
from spiderfarm import Spider

class Five(Spider):
    name = "five"
    start_urls = [f"http://a.test/{n}" for n in range(5)]

    def parse(self, response):
        yield {"url": response.url}
"""


@pytest.fixture
def spider(tmp_path: Path) -> Path:
    path = tmp_path / "five.py"
    path.write_text(textwrap.dedent(SPIDER))
    return path


def config(tmp_path: Path, spider: Path) -> ServerConfig:
    return ServerConfig(
        spider_ref=str(spider), output=str(tmp_path / "out.jsonl"), job_dir=tmp_path / "job",
        overrides={"obey_robots": False},
    )  # fmt: skip


@pytest.fixture
def servers(tmp_path: Path, spider: Path) -> Iterator[list[FarmServer]]:
    """FarmServers made by the test (as if restarted after kill -9), closed at the end."""
    made: list[FarmServer] = []
    yield made
    for server in made:
        if server.journal is not None:
            server.journal.close()
        server.feed.close()


def crawl_one_page(server: FarmServer, n: int) -> None:
    ((lease_id, _, _),) = server.frontier.exchange("w1", [], 1)[0]
    server.frontier.exchange("w1", [ok(lease_id, items=[item(n)])], 0)


def test_a_failed_journal_write_is_written_by_the_next_one(
    tmp_path: Path, spider: Path, servers: list[FarmServer]
) -> None:
    server = FarmServer(config(tmp_path, spider))
    servers.append(server)
    assert server.seed() == 5
    assert server.journal is not None
    real_commit = server.journal.commit
    calls = 0

    def disk_full_once(ops: list[tuple[Any, ...]], meta: dict[str, str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real_commit(ops, meta)

    server.journal.commit = disk_full_once  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        server._commit()  # what the committer thread does, then logs and tries again
    crawl_one_page(server, 1)
    server._commit()
    server.feed.flush()
    # As if killed -9 here, and started again with the same job dir:
    resumed = FarmServer(config(tmp_path, spider))
    servers.append(resumed)
    status = resumed.frontier.status()
    assert (status["queued"], status["seen"], status["stats"]["pages"]) == (4, 5, 1)
    assert (tmp_path / "out.jsonl").read_text() == item(1) + "\n"


def test_a_dont_filter_request_is_not_seen_after_a_resume_either(tmp_path: Path) -> None:
    # A live crawl does not mark a dont_filter request's URL seen (Scrapy's rule), so a
    # later ordinary link to it is crawled; a resumed crawl must agree.
    journal = Journal(tmp_path / "job")
    fp = Fingerprinter().fingerprint("http://a.test/x")
    wire = Request("http://a.test/x", dont_filter=True).to_wire()
    plain = Request("http://a.test/y").to_wire()
    fp_plain = Fingerprinter().fingerprint("http://a.test/y")
    journal.commit(
        [("add", 1, fp, host_of("http://a.test/x"), wire), ("add", 2, fp_plain, "a.test", plain)],
        {"spider": "five"},
    )
    assert list(journal.fingerprints()) == [fp_plain]
    assert [rid for rid, _, _, _ in journal.queued()] == [1, 2]
    journal.close()


def test_a_close_asked_for_by_a_signal_handler_takes_no_lock(
    tmp_path: Path, spider: Path, servers: list[FarmServer]
) -> None:
    # A SIGINT handler runs on the main thread, which may hold the frontier's lock at that
    # instant (inside tick or flush_feed): asking for the close must not need that lock.
    server = FarmServer(config(tmp_path, spider))
    servers.append(server)
    server.seed()
    with server.frontier._lock:  # as if interrupted inside the lock
        asker = threading.Thread(target=server.request_close, args=("shutdown",))
        asker.start()
        asker.join(5)
        assert not asker.is_alive()
    server.wait(tick_s=0.01)
    assert (server.frontier.state, server.frontier.close_reason) == ("finished", "shutdown")
    assert server.frontier.status()["queued"] == 5  # kept for a resume
