"""The server's crawl state through failures: journal writes that fail, resumes, a close asked
for by a signal handler, ops that cannot be written, feeds that fail on the tick, a journal
thread that must not keep the process alive."""

from __future__ import annotations

import base64
import errno
import gzip
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spiderfarm.http import Request
from spiderfarm.journal import Journal
from spiderfarm.server import FarmServer, ServerConfig
from spiderfarm.urls import Fingerprinter, host_of
from tests.sites import subprocess_environ
from tests.test_frontier import item, ok
from tests.tmpfs import Tmpfs

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


def nested(levels: int) -> dict[str, Any]:
    """A dict ``levels`` dicts deep: past about 1,000, pickle raises RecursionError."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_a_bad_op_is_skipped_and_the_others_are_committed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Without this, one op SQLite or pickle cannot take fails every later commit (and the
    # server's last one, so it exits 1 with no summary).
    caplog.set_level(logging.ERROR, logger="spiderfarm.journal")
    journal = Journal(tmp_path / "job")
    fpr = Fingerprinter()

    def add(rid: int, fp: int | None = None, meta: dict[str, Any] | None = None) -> tuple[Any, ...]:
        url = f"http://a.test/{rid}"
        fp = fpr.fingerprint(url) if fp is None else fp
        return ("add", rid, fp, "a.test", Request(url, meta=meta).to_wire())

    ops = [
        add(1), add(2, fp=2**64), add(3, meta=nested(5000)), add(4), add(5), add(6),
        ("done", 1),
        ("dead", 4, "http://a.test/4", "http_500", 3),
        ("dead", 5, "http://a.test/5", "bad \udc80 reason", 3),  # not UTF-8: SQLite refuses it
        ("attempt", 6, 2),
    ]  # fmt: skip
    assert journal.commit(ops, {"spider": "five"}) == 3
    assert [(rid, attempt) for rid, _, _, attempt in journal.queued()] == [(5, 0), (6, 2)]
    assert sorted(journal.fingerprints()) == sorted(
        fpr.fingerprint(f"http://a.test/{n}") for n in (1, 4, 5, 6)
    )
    state = journal.load()
    assert state is not None
    assert (state.meta["spider"], state.dead_letters) == (
        "five",
        [("http://a.test/4", "http_500", 3)],
    )
    errors = [r.getMessage() for r in caplog.records]
    assert errors == [
        "job journal: cannot write the new request http://a.test/2 (OverflowError: Python int "
        "too large to convert to SQLite INTEGER); skipped it, so a resumed crawl will not have it",
        "job journal: cannot write the new request http://a.test/3 (RecursionError: maximum "
        "recursion depth exceeded while pickling an object); skipped it, so a resumed crawl "
        "will not have it",
        "job journal: cannot write the dead letter http://a.test/5 (UnicodeEncodeError: 'utf-8' "
        "codec can't encode character '\\udc80' in position 4: surrogates not allowed); "
        "skipped it, so a resumed crawl fetches it again",
    ]
    # The bad ops are gone: the next commit is an ordinary one.
    assert journal.commit([("done", 6)], {"spider": "five"}) == 0
    assert [rid for rid, _, _, _ in journal.queued()] == [5]
    journal.close()


def test_a_disk_full_commit_writes_nothing_and_the_same_ops_commit_later(tmp_path: Path) -> None:
    # A transient failure is no op's fault: nothing is skipped, the whole commit fails, and
    # the server hands the same ops to the next one
    # (test_a_failed_journal_write_is_written_by_the_next_one).
    journal = Journal(tmp_path / "job")
    db = journal._db
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full", for real
    wire = Request("http://a.test/big", body=b"x" * 100_000).to_wire()
    ops = [
        ("add", 1, 7, "a.test", wire),
        ("add", 2, 8, "a.test", Request("http://a.test/").to_wire()),
    ]
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        journal.commit(ops, {"spider": "five"})
    assert (list(journal.queued()), journal.load()) == ([], None)
    db.execute("PRAGMA max_page_count = 1073741823")  # room again
    assert journal.commit(ops, {"spider": "five"}) == 0
    assert [rid for rid, _, _, _ in journal.queued()] == [1, 2]
    journal.close()


def test_a_request_the_journal_cannot_hold_does_not_stop_later_commits(
    tmp_path: Path, spider: Path, servers: list[FarmServer]
) -> None:
    # As if a bad fingerprint got past check_exchange: this run crawls on, every commit
    # after it is written, and a resumed run has everything but that one request.
    server = FarmServer(config(tmp_path, spider))
    servers.append(server)
    assert server.seed() == 5
    wire = Request("http://a.test/bad").to_wire()
    assert server.frontier.push([(2**64, "a.test", wire)]) == 1
    server._commit()
    crawl_one_page(server, 1)
    server._commit()
    server.feed.flush()
    resumed = FarmServer(config(tmp_path, spider))
    servers.append(resumed)
    status = resumed.frontier.status()
    assert (status["queued"], status["seen"], status["stats"]["pages"]) == (4, 5, 1)
    assert (tmp_path / "out.jsonl").read_text() == item(1) + "\n"
def test_a_checkpoint_whose_feed_offsets_raise_keeps_its_changes(
    tmp_path: Path, spider: Path, servers: list[FarmServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FarmServer(config(tmp_path, spider))
    servers.append(server)
    server.seed()
    crawl_one_page(server, 1)

    def failing() -> dict[str, int]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(server.feed, "offsets", failing)
    with pytest.raises(OSError):
        server._commit()
    monkeypatch.undo()
    assert server._commit()  # the page's "done" was not dropped with the failed checkpoint
    resumed = FarmServer(config(tmp_path, spider))
    servers.append(resumed)
    status = resumed.frontier.status()
    assert (status["queued"], status["stats"]["pages"]) == (4, 1)  # not fetched twice


def test_a_journal_that_cannot_be_written_blocks_neither_stop_nor_the_summary(
    tmp_path: Path, spider: Path, servers: list[FarmServer]
) -> None:
    server = FarmServer(config(tmp_path, spider))
    servers.append(server)
    server.seed()  # commits once: the job dir holds the crawl before any page is crawled
    assert server.journal is not None

    def disk_full(ops: list[tuple[Any, ...]], meta: dict[str, str]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    server.journal.commit = disk_full  # type: ignore[method-assign]
    crawl_one_page(server, 1)
    assert not server._try_commit()  # what the committer thread does
    assert server.frontier.close_reason == "journal_error"
    server.stop()  # the last commit fails too: logged, not raised
    job = str(tmp_path / "job")
    (problem,) = server.problems()
    assert problem.startswith(
        f"cannot write the job dir {job!r}: database or disk is full; job dir {job!r} holds "
        "the crawl as of its last commit, "
    )
    # The job dir is as it was before the page: the resume fetches it again, and cuts the
    # feed back to match.
    resumed = FarmServer(config(tmp_path, spider))
    servers.append(resumed)
    status = resumed.frontier.status()
    assert (status["queued"], status["stats"].get("pages", 0)) == (5, 0)
    assert (tmp_path / "out.jsonl").read_text() == ""


def test_a_flush_that_fails_on_the_tick_closes_the_crawl_without_escaping_wait(
    tmp_path: Path, spider: Path, servers: list[FarmServer], tmpfs: Callable[[str, int], Tmpfs]
) -> None:
    disk = tmpfs("disk", 4)
    out = disk.path / "items.jsonl.gz"  # a gzip feed holds items until the tick's flush
    server = FarmServer(
        ServerConfig(spider_ref=str(spider), output=str(out), overrides={"obey_robots": False})
    )
    servers.append(server)
    server.seed()
    ((lease_id, _, _),) = server.frontier.exchange("w1", [], 1)[0]
    noise = base64.b64encode(os.urandom(6000)).decode()
    server.frontier.exchange("w1", [ok(lease_id, items=[json.dumps({"noise": noise})])], 0)
    assert server.frontier.status()["stats"]["items"] == 1
    server.wait(tick_s=0.01)  # the flush fails with ENOSPC: the crawl closes, wait returns
    server.stop()
    status = server.frontier.status()
    assert (status["state"], status["close_reason"]) == ("finished", "feed_error")
    # The item never reached the file: it is not counted as written.
    assert (status["stats"]["items"], status["stats"]["items/lost"]) == (0, 1)
    assert gzip.decompress(out.read_bytes()) == b""  # a complete, empty gzip file
    assert server.problems() == [
        f"cannot write the feed {str(out)!r}: No space left on device; the feeds hold the "
        "items counted; without --job-dir the crawl cannot resume"
    ]


def test_the_journal_thread_cannot_keep_the_process_alive(tmp_path: Path, spider: Path) -> None:
    # The main thread dies without stop() (a bug, say): the process must still exit.
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from spiderfarm.server import FarmServer, ServerConfig

        server = FarmServer(ServerConfig(
            spider_ref={str(spider)!r}, output={str(tmp_path / "out.jsonl")!r},
            job_dir=Path({str(tmp_path / "job")!r}), overrides={{"obey_robots": False}},
        ))
        server.seed()
        server.listen()
        raise SystemExit(3)
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_environ(), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 30
