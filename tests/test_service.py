"""Service mode (issue 12), end to end: a serving farm of real processes, the seed's plain
``BaseManager`` client, ``push``/``results``, ``spiderfarm.connect``, idle close, a
``kill -9`` with a job dir, and concurrent producers and consumers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import spiderfarm
from spiderfarm.errors import ConnectError
from tests.farm import KEY_HEX, ServerProcess, read_items, start_worker, wait_all, write_key
from tests.sites import REPO_ROOT, subprocess_environ

pytestmark = pytest.mark.timeout(180)

SPIDERS = str(REPO_ROOT / "tests" / "service_spiders")
AUTHORS = sorted(p.name for p in (REPO_ROOT.parent / "shared/sites/quotes/author").iterdir())


def _urls(base: str) -> tuple[list[str], list[str]]:
    """40 URLs (10 pages, 30 authors) and 20 more (the other authors)."""
    pages = [f"{base}page/{n}/" for n in range(1, 11)]
    authors = [f"{base}author/{name}/" for name in AUTHORS]
    assert len(authors) == 50
    return pages + authors[:30], authors[30:]


class ServingCrawl:
    """``python -m spiderfarm crawl pages --serve``: a whole serving farm on this machine."""

    def __init__(self, tmp: Path, *extra: str, workers: int = 2) -> None:
        self.key_file = write_key(tmp)
        self.feed = tmp / "feed.jsonl"
        self.out_path, self.err_path = tmp / "crawl.out", tmp / "crawl.err"
        argv = [
            sys.executable, "-m", "spiderfarm", "crawl", "pages", "--serve",
            "--spiders-dir", SPIDERS, "--workers", str(workers), "--authkey-file",
            str(self.key_file), "-o", str(self.feed), *extra,
        ]  # fmt: skip
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=subprocess_environ(), stdout=out, stderr=err,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"serving on (127\.0\.0\.1:\d+)", self.out_path.read_text())
            if found:
                self.address = found.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"the serving crawl did not start: {self.output()}")

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def interrupt(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[ServingCrawl]:
    crawl = ServingCrawl(tmp_path, "-s", "obey_robots=false")
    try:
        yield crawl
    finally:
        crawl.close()


#: The seed's client, exactly as the issue gives it, after host, port, key and urls.
SEED = """
from multiprocessing.managers import BaseManager
class QueueManager(BaseManager): pass
QueueManager.register('get_task_queue'); QueueManager.register('get_result_queue')
m = QueueManager(address=(host, port), authkey=key); m.connect()
task, result = m.get_task_queue(), m.get_result_queue()
for url in urls: task.put(url)
for _ in urls: print(result.get(timeout=30))
"""


def _seed_client(address: str, urls: list[str]) -> list[dict[str, object]]:
    """Run the seed's snippet verbatim in a process of its own (no spiderfarm import);
    the results it printed (Python reprs of plain dicts)."""
    host, port = address.split(":")
    prelude = (
        f"host, port = {host!r}, {int(port)}\nkey = bytes.fromhex({KEY_HEX!r})\nurls = {urls!r}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + SEED], capture_output=True, text=True, timeout=90,
        cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    import ast

    return [ast.literal_eval(line) for line in done.stdout.splitlines()]


def test_the_seed_client_works_unchanged_against_a_serving_farm(
    farm: ServingCrawl, quotes_site: str
) -> None:
    first, later = _urls(quotes_site)
    results = _seed_client(farm.address, first)
    assert len(results) == 40
    assert sorted(r["url"] for r in results) == sorted(first)
    for r in results:
        assert r["ok"] is True and r["status"] == 200 and r["reason"] is None
        assert r["root"] == r["url"] and r["meta"] == {}
        assert r["items"] == [{"url": r["url"], "title": "Quotes to Scrape"}]
    # The farm stays up with nothing queued; 20 more go into the same farm.
    time.sleep(1.0)
    assert farm.proc.poll() is None
    more = _seed_client(farm.address, later)
    assert sorted(r["url"] for r in more) == sorted(later)
    assert farm.interrupt() == 0, farm.output()
    items = read_items(farm.feed)
    assert len(items) == 60
    assert sorted(str(i["url"]) for i in items) == sorted(first + later)
    assert "crawl shutdown: 60 pages, 60 items, 0 errors" in farm.output()


def test_a_malformed_put_is_refused_and_the_farm_serves_on(
    farm: ServingCrawl, quotes_site: str
) -> None:
    client = spiderfarm.connect(farm.address, authkey_file=str(farm.key_file))
    bad = [
        ("ftp://example.com/x", "task: unsupported URL scheme 'ftp'"),
        ({"url": f"{quotes_site}page/1/", "callback": "parse_nothing"},
         "task: callback 'parse_nothing' is not a method of spider 'pages'"),
        (42, "task: got int; a task is a URL string or a dict with 'url'"),
        ({"url": 42}, "task: 'url' must be a string, got int"),
        ({"url": f"{quotes_site}page/1/", "priority": "high"}, "task: 'priority' must be an int"),
        ({"url": f"{quotes_site}page/1/", "colour": "red"}, "task: unknown field 'colour'"),
        ({"url": f"{quotes_site}page/1/", "meta": {"when": object()}},
         "task: 'meta' must hold plain data"),
        ({"url": f"{quotes_site}page/1/", "headers": {"X": 1}},
         "task: 'headers' must be a dict of str to str"),
    ]  # fmt: skip
    for task, message in bad:
        with pytest.raises(ValueError) as info:
            client.tasks.put(task)
        assert str(info.value).startswith(message), str(info.value)
    done = client.submit([f"{quotes_site}page/2/", "nope", {"url": f"{quotes_site}page/3/",
                          "callback": "parse_author", "meta": {"n": 3}}])  # fmt: skip
    assert done.accepted == 2
    assert done.urls == [f"{quotes_site}page/2/", f"{quotes_site}page/3/"]
    assert [i for i, _ in done.refused] == [1]
    assert "missing scheme? write http://" in done.refused[0][1]
    got = {r["url"]: r for r in client.results(timeout=30, limit=2)}
    assert got[f"{quotes_site}page/2/"]["items"] == [
        {"url": f"{quotes_site}page/2/", "title": "Quotes to Scrape"}
    ]
    assert got[f"{quotes_site}page/3/"]["items"] == [{"author": ""}]  # parse_author's item
    assert got[f"{quotes_site}page/3/"]["meta"] == {"n": 3}
    assert farm.proc.poll() is None
    assert farm.interrupt() == 0
    assert len(read_items(farm.feed)) == 2


def test_filtered_and_failed_requests_give_results_and_descendants_name_their_root(
    farm: ServingCrawl, quotes_site: str
) -> None:
    client = spiderfarm.connect(farm.address, authkey=KEY_HEX)
    page = f"{quotes_site}page/1/"
    done = client.submit([{"url": page, "callback": "parse_follow"}])
    assert done.accepted == 1
    results = list(client.results(timeout=30, limit=9))  # the page and its 8 authors
    assert results[0]["url"] == page
    assert {r["root"] for r in results} == {page}
    authors = sorted(r["items"][0]["author"] for r in results[1:])
    assert len(authors) == 8 and "Albert Einstein" in authors
    # A duplicate of itself and of a descendant (as page 1 links it), a missing page,
    # and dont_filter.
    einstein, nowhere = f"{quotes_site}author/Albert-Einstein", f"{quotes_site}nowhere/"
    done = client.submit([page, einstein, nowhere, {"url": page, "dont_filter": True}])
    assert done.accepted == 2 and len(done.filtered) == 2
    got = sorted(
        (
            (r["url"], r["ok"], r["status"], r["reason"])
            for r in client.results(timeout=30, limit=4)
        ),
        key=str,
    )
    assert got == sorted(
        [
            (page, False, None, "filtered/duplicate"),
            (einstein, False, None, "filtered/duplicate"),
            (nowhere, False, 404, "http_404"),
            (page, True, 200, None),
        ],
        key=str,
    )
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "spiderfarm", "status", "--connect", farm.address,
             "--authkey-file", str(farm.key_file), "--json"],
            capture_output=True, text=True, env=subprocess_environ(), check=True, timeout=30,
        ).stdout
    )  # fmt: skip
    assert status["results"]["produced"] == 13
    assert status["results"]["taken"] == 13 and status["results"]["dropped"] == 0
    assert status["stats"]["submitted"] == 5


def test_the_result_queue_is_bounded_and_the_feed_still_gets_everything(
    tmp_path: Path, quotes_site: str
) -> None:
    crawl = ServingCrawl(tmp_path, "-s", "obey_robots=false", "-s", "result_queue_size=5")
    try:
        client = spiderfarm.connect(crawl.address, authkey=KEY_HEX)
        urls = [f"{quotes_site}page/{n}/" for n in range(1, 9)]
        assert client.submit(urls).accepted == 8
        deadline = time.monotonic() + 30
        while len(read_items(crawl.feed)) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.waiting_results() == 5
        assert len(list(client.results(timeout=1))) == 5
        table = subprocess.run(
            [sys.executable, "-m", "spiderfarm", "status", "--connect", crawl.address,
             "--authkey-file", str(crawl.key_file)],
            capture_output=True, text=True, env=subprocess_environ(), check=True, timeout=30,
        ).stdout  # fmt: skip
        assert "results: 0 held (of 5), 5 taken, 3 dropped (the queue was full)" in table
        assert crawl.interrupt() == 0
        assert len(read_items(crawl.feed)) == 8
        assert "results dropped (the result queue was full): 3" in crawl.output()
    finally:
        crawl.close()


def test_idle_close_s_ends_a_serving_farm(tmp_path: Path, quotes_site: str) -> None:
    crawl = ServingCrawl(tmp_path, "-s", "obey_robots=false", "-s", "idle_close_s=2", workers=1)
    try:
        client = spiderfarm.connect(crawl.address, authkey=KEY_HEX)
        assert client.submit([f"{quotes_site}page/{n}/" for n in (1, 2, 3)]).accepted == 3
        assert crawl.proc.wait(60) == 0
    finally:
        crawl.close()
    assert "crawl idle_close: 3 pages, 3 items, 0 errors" in crawl.output()
    assert len(read_items(crawl.feed)) == 3


def test_a_killed_serving_server_resumes_every_pushed_url_exactly_once(
    tmp_path: Path, quotes_site: str
) -> None:
    key = write_key(tmp_path)
    job, feed = tmp_path / "job", tmp_path / "feed.jsonl"
    args = ["pages", "--serve", "--spiders-dir", SPIDERS, "--job-dir", str(job), "-o", str(feed),
            "-s", "obey_robots=false"]  # fmt: skip
    server = ServerProcess(args, key, tmp_path)
    first, later = _urls(quotes_site)
    pushed = first + later
    push = subprocess.run(
        [sys.executable, "-m", "spiderfarm", "push", "--connect", server.address,
         "--authkey-file", str(key), "-"],
        input="\n".join(pushed) + "\n", capture_output=True, text=True,
        env=subprocess_environ(), timeout=60, check=False,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    assert "60 accepted, 0 filtered, 0 refused" in push.stderr
    time.sleep(1.5)  # the journal commits every 0.2 s
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    server.stop()
    server = ServerProcess(args, key, tmp_path)
    try:
        workers = [start_worker(server.address, key, "--spiders-dir", SPIDERS) for _ in range(2)]
        client = spiderfarm.connect(server.address, authkey=KEY_HEX)
        results = list(client.results(timeout=30, limit=60))
        assert sorted(r["url"] for r in results) == sorted(pushed)
        assert all(r["root"] == r["url"] and r["ok"] for r in results)
        server.proc.send_signal(signal.SIGINT)
        assert server.wait(60) == 0, server.output()
        assert wait_all(workers, 30) == [0, 0]
    finally:
        server.stop()
    items = read_items(feed)
    assert len(items) == 60 and sorted(str(i["url"]) for i in items) == sorted(pushed)


def test_push_of_100000_urls_from_stdin(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(
        ["pages", "--serve", "--spiders-dir", SPIDERS, "-s", "obey_robots=false"], key, tmp_path
    )
    try:
        urls = "".join(f"http://127.0.0.1:9/item/{i}\n" for i in range(100_000))
        push = subprocess.run(
            [sys.executable, "-m", "spiderfarm", "push", "--connect", server.address,
             "--authkey-file", str(key)],
            input=urls + "http://127.0.0.1:9/item/7\n# a comment\n\nmailto:x@y\n",
            capture_output=True, text=True, env=subprocess_environ(), timeout=120, check=False,
        )  # fmt: skip
        assert push.returncode == 1, push.stderr  # one refused line
        assert (
            "100002 tasks in" in push.stderr
            and "100000 accepted, 1 filtered, 1 refused" in push.stderr
        ), push.stderr
        assert "filtered/duplicate: 1" in push.stderr
        assert "refused line 100004: unsupported URL scheme 'mailto'" in push.stderr
        client = spiderfarm.connect(server.address, authkey=KEY_HEX)
        assert client.queued() == 100_000
        assert [r["reason"] for r in client.results(timeout=1)] == ["filtered/duplicate"]
    finally:
        server.stop()


def test_two_producers_and_two_consumers_at_once(farm: ServingCrawl, quotes_site: str) -> None:
    tags = sorted(p.name for p in (REPO_ROOT.parent / "shared/sites/quotes/tag").iterdir())
    urls = [f"{quotes_site}tag/{t}/" for t in tags[:120]]
    env = subprocess_environ()
    base = ["--connect", farm.address, "--authkey-file", str(farm.key_file)]
    consumers = [
        subprocess.Popen(
            [sys.executable, "-m", "spiderfarm", "results", *base, "--timeout", "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    files = []
    for n, half in enumerate((urls[::2], urls[1::2])):
        files.append(farm.feed.parent / f"urls{n}.txt")
        files[-1].write_text("\n".join(half) + "\n")
    producers = [
        subprocess.Popen(
            [sys.executable, "-m", "spiderfarm", "push", *base, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for path in files
    ]
    for proc in producers:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "60 accepted" in err, err
    seen: list[str] = []
    for proc in consumers:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        seen += [json.loads(line)["url"] for line in out.splitlines()]
    assert Counter(seen) == Counter(urls)  # each result once, whichever consumer took it


def test_a_consumer_that_vanishes_mid_get_loses_no_result(
    farm: ServingCrawl, quotes_site: str
) -> None:
    waiting = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, spiderfarm\n"
            f"c = spiderfarm.connect({farm.address!r}, authkey={KEY_HEX!r})\n"
            "print('waiting', flush=True)\n"
            "c.result_queue.get_many(10, None)\n"
        )],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_environ(),
    )  # fmt: skip
    assert waiting.stdout is not None and waiting.stdout.readline() == "waiting\n"
    time.sleep(0.5)  # it is blocked in get_many on the server
    waiting.kill()
    waiting.communicate()
    client = spiderfarm.connect(farm.address, authkey=KEY_HEX)
    urls = [f"{quotes_site}page/{n}/" for n in range(1, 6)]
    client.submit(urls)
    assert sorted(r["url"] for r in client.results(timeout=30, limit=5)) == urls


def test_the_python_client_from_asyncio_code(farm: ServingCrawl, quotes_site: str) -> None:
    async def go() -> list[dict[str, object]]:
        client = spiderfarm.connect(farm.address, authkey=KEY_HEX, batch=2)
        done = await client.asubmit(f"{quotes_site}page/{n}/" for n in range(1, 6))
        assert done.accepted == 5
        return [r async for r in client.aresults(timeout=30, limit=5)]

    results = asyncio.run(go())
    assert sorted(str(r["url"]) for r in results) == [
        f"{quotes_site}page/{n}/" for n in range(1, 6)
    ]


def test_a_farm_without_serve_says_how_to_get_the_queues(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(
        ["pages", "--spiders-dir", SPIDERS, "-a", "start_url=http://127.0.0.1:9/"], key, tmp_path
    )
    try:
        with pytest.raises(ConnectError) as info:
            spiderfarm.connect(server.address, authkey=KEY_HEX)
        assert str(info.value).endswith(
            "'get_task_queue' is not served here; the task and result queues are served by "
            "a farm started with --serve"
        )
        with pytest.raises(ConnectError) as info:
            spiderfarm.connect(server.address, authkey=os.urandom(32))
        assert "refused the authkey" in str(info.value)
    finally:
        server.stop()


def test_only_the_registry_is_reachable_from_a_stock_client(farm: ServingCrawl) -> None:
    from multiprocessing.connection import Client
    from multiprocessing.managers import dispatch

    for call in ("shutdown", "debug_info", "number_of_objects", "get_methods"):
        conn = Client(tuple_address(farm.address), authkey=bytes.fromhex(KEY_HEX))
        try:
            with pytest.raises(Exception) as info:
                dispatch(conn, None, call, ())
            assert f"{call!r} is not available to workers" in str(info.value)
        finally:
            conn.close()
    assert farm.proc.poll() is None


def tuple_address(address: str) -> tuple[str, int]:
    host, port = address.split(":")
    return host, int(port)


def test_crawl_serve_without_a_key_file_writes_one_and_says_how_to_connect(
    tmp_path: Path, quotes_site: str
) -> None:
    out = tmp_path / "crawl.out"
    argv = [sys.executable, "-m", "spiderfarm", "crawl", "pages", "--serve", "--workers", "1",
            "--spiders-dir", SPIDERS, "-s", "obey_robots=false",
            "-s", "idle_close_s=3"]  # fmt: skip
    with out.open("w") as fh:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=subprocess_environ(), stdout=fh,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        printed = None
        deadline = time.monotonic() + 30
        while printed is None and time.monotonic() < deadline and proc.poll() is None:
            printed = re.search(
                r"push --connect (127\.0\.0\.1:\d+) --authkey-file (\S+) URLS\.txt", out.read_text()
            )
            time.sleep(0.05)
        assert printed is not None, out.read_text()
        address, key_file = printed.group(1), Path(printed.group(2))
        assert key_file.stat().st_mode & 0o777 == 0o600
        client = spiderfarm.connect(address, authkey_file=str(key_file))
        assert client.submit([f"{quotes_site}page/1/"]).accepted == 1
        assert [r["url"] for r in client.results(timeout=30, limit=1)] == [f"{quotes_site}page/1/"]
        assert proc.wait(60) == 0  # idle_close_s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    key_file.unlink()
