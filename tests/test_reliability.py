"""Nothing lost: real worker and server processes, real signals, exact feeds.

Each test crawls a generated catalogue with a spider whose callbacks take a little time,
so that a crawl is reliably still running when the test strikes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiderfarm.demosite import Catalogue
from spiderfarm.journal import Journal
from tests.farm import ServerProcess, read_items, start_worker, wait_all, write_key
from tests.sites import (
    HITS,
    SiteServer,
    make_test_app,
    run_subprocess_site,
    stop_subprocess,
    subprocess_environ,
)

pytestmark = pytest.mark.timeout(240)

PAGES = 1500

SLOW_SPIDER = """
import asyncio
from spiderfarm import Request, Spider

class SlowCatalogue(Spider):
    name = "slowcat"
    custom_settings = {"concurrency": 4, "per_host_concurrency": 64}
    start_url = ""

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    async def parse(self, response):
        await asyncio.sleep(0.03)  # a callback with some work to do: ~130 pages/s a worker
        yield {"url": response.url, "sku": response.css("span.sku::text").get()}
        for request in response.follow_all(css="a.related", callback=self.parse):
            yield request
"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    proc, base = run_subprocess_site(
        [sys.executable, "-m", "spiderfarm.demosite", "--port", "0", "--pages", str(PAGES)]
    )
    try:
        yield base
    finally:
        stop_subprocess(proc)


@pytest.fixture
def spider_file(tmp_path: Path) -> Path:
    path = tmp_path / "slowcat.py"
    path.write_text(textwrap.dedent(SLOW_SPIDER))
    return path


def assert_exact_feed(out: Path, base: str) -> None:
    urls = [str(item["url"]) for item in read_items(out)]
    expected = {base.rstrip("/") + p for p in Catalogue(pages=PAGES).paths()}
    assert len(urls) == len(set(urls)), "duplicate items in the feed"
    assert set(urls) == expected


def summary(server: ServerProcess) -> str:
    return server.out_path.read_text()


def items_so_far(out: Path) -> int:
    try:
        return out.read_text().count("\n")
    except FileNotFoundError:
        return 0


def wait_for_items(out: Path, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while items_so_far(out) < n:
        assert time.monotonic() < deadline, f"fewer than {n} items after {timeout_s}s"
        time.sleep(0.05)


def wait_until_crawling(server: ServerProcess, worker: subprocess.Popen[str], out: Path) -> None:
    """Until ``worker`` has joined and the crawl has moved on since: a loaded machine can
    start a worker late, and a test must strike one that holds work."""
    deadline = time.monotonic() + 60
    while f"-{worker.pid} joined" not in server.err_path.read_text():
        assert time.monotonic() < deadline, "the worker never joined"
        time.sleep(0.05)
    wait_for_items(out, items_so_far(out) + 150)


def run_farm(
    tmp_path: Path, spider_file: Path, base: str, settings: list[str], workers: int = 3
) -> tuple[ServerProcess, list[subprocess.Popen[str]], Path, Path]:
    out = tmp_path / "items.jsonl"
    key = write_key(tmp_path)
    args = [str(spider_file), "-a", f"start_url={base}", "-o", str(out)]
    for s in settings:
        args += ["-s", s]
    server = ServerProcess(args, key, tmp_path)
    procs = [start_worker(server.address, key) for _ in range(workers)]
    return server, procs, out, key


def test_no_fault_baseline(tmp_path: Path, spider_file: Path, site: str) -> None:
    started = time.monotonic()
    server, workers, out, _ = run_farm(tmp_path, spider_file, site, [])
    assert wait_all(workers, 120) == [0, 0, 0]
    assert server.wait(30) == 0
    print(f"\nno-fault crawl of {PAGES} pages with 3 workers: {time.monotonic() - started:.1f}s")
    assert_exact_feed(out, site)
    assert f"crawl finished: {PAGES} pages, {PAGES} items, 0 errors" in summary(server)


def test_kill_9_a_worker_mid_crawl(tmp_path: Path, spider_file: Path, site: str) -> None:
    started = time.monotonic()
    server, workers, out, _ = run_farm(tmp_path, spider_file, site, ["worker_timeout_s=2"])
    wait_until_crawling(server, workers[0], out)
    workers[0].kill()  # it holds leases and fetched-but-unacked items
    killed_at = time.monotonic()
    assert wait_all(workers[1:], 120) == [0, 0]
    assert server.wait(30) == 0
    done = time.monotonic()
    print(
        f"\nkill -9 of a worker at {killed_at - started:.1f}s: crawl done {done - killed_at:.1f}s "
        f"later, {done - started:.1f}s in all"
    )
    assert_exact_feed(out, site)
    text = summary(server)
    assert f"{PAGES} items" in text
    assert "silent for" in server.err_path.read_text()  # the dead worker was noticed
    wait_all(workers[:1], 1)


def test_sigstop_worker_late_acks_are_refused(tmp_path: Path, spider_file: Path, site: str) -> None:
    server, workers, out, _ = run_farm(tmp_path, spider_file, site, ["worker_timeout_s=1"])
    wait_until_crawling(server, workers[0], out)
    os.kill(workers[0].pid, signal.SIGSTOP)
    time.sleep(2.5)  # past worker_timeout_s: its leases go to the others
    os.kill(workers[0].pid, signal.SIGCONT)
    _, stopped_err = workers[0].communicate(timeout=120)
    assert workers[0].returncode == 0, stopped_err
    assert wait_all(workers[1:], 120) == [0, 0]
    assert server.wait(30) == 0
    assert_exact_feed(out, site)
    # Pages are counted once per completed request: the late acks did not count twice.
    assert f"crawl finished: {PAGES} pages, {PAGES} items, 0 errors" in summary(server)
    assert "late acks (their leases had expired)" in stopped_err


def test_kill_9_the_server_and_resume_from_the_job_dir(
    tmp_path: Path, spider_file: Path, site: str
) -> None:
    out = tmp_path / "items.jsonl"
    job = tmp_path / "job"
    key = write_key(tmp_path)
    args = [str(spider_file), "-a", f"start_url={site}", "-o", str(out), "--job-dir", str(job)]
    server = ServerProcess(args, key, tmp_path)
    workers = [start_worker(server.address, key, "--give-up-s", "60") for _ in range(3)]
    wait_for_items(out, PAGES // 2)
    server.proc.kill()
    server.proc.wait()
    killed_at = time.monotonic()
    server.stop()
    restarted = ServerProcess(args, key, tmp_path, bind=server.address)
    assert wait_all(workers, 120) == [0, 0, 0]
    assert restarted.wait(30) == 0
    print(f"\nserver kill -9 at half-way: crawl done {time.monotonic() - killed_at:.1f}s later")
    assert_exact_feed(out, site)
    assert "resuming from" in restarted.err_path.read_text()


def crawl_with_job_dir(
    tmp_path: Path, spider_file: Path, site: str
) -> tuple[list[str], Path, subprocess.Popen[str]]:
    """``crawl ... --job-dir`` started and a third of the way through: its argv (to run it
    again), its feed and its process."""
    out = tmp_path / "items.jsonl"
    argv = [
        sys.executable, "-m", "spiderfarm", "crawl", str(spider_file), "-a", f"start_url={site}",
        "-o", str(out), "--job-dir", str(tmp_path / "job"), "--workers", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=subprocess_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_items(out, PAGES // 3)
    return argv, out, proc


def test_sigint_crawl_then_resume_with_the_same_job_dir(
    tmp_path: Path, spider_file: Path, site: str
) -> None:
    argv, out, first = crawl_with_job_dir(tmp_path, spider_file, site)
    first.send_signal(signal.SIGINT)
    stdout, _ = first.communicate(timeout=60)
    assert first.returncode == 0
    assert "crawl shutdown:" in stdout
    written_first = items_so_far(out)
    assert PAGES // 3 <= written_first < PAGES
    second = subprocess.run(
        argv, env=subprocess_environ(), capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr
    assert "crawl finished:" in second.stdout
    assert_exact_feed(out, site)


async def test_retries_backoff_retry_after_and_dead_letters(tmp_path: Path) -> None:
    async with SiteServer(make_test_app()) as site:
        spider = tmp_path / "retrying.py"
        spider.write_text(
            textwrap.dedent(
                """
                from spiderfarm import Request, Spider

                class Retrying(Spider):
                    name = "retrying"
                    # 503s slow a host down sharply (doubling its delay); cap that here
                    # so the test stays quick: Retry-After is what it checks.
                    custom_settings = {"max_retries": 2, "retry_backoff_s": 0.1,
                                       "autothrottle_max_delay_s": 2.0}

                    def start_requests(self):
                        for path in ("flaky/a?fail=2&code=503", "status/503",
                                     "retry-after/r?seconds=2&fail=1"):
                            yield Request(self.base + path, callback=self.parse)

                    def parse(self, response):
                        yield {"url": response.url, "h1": response.css("h1::text").get()}
                """
            )
        )
        out = tmp_path / "out.jsonl"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spiderfarm", "crawl", str(spider), "-a",
            f"base={site.url('/')}", "-o", str(out), "--workers", "1",
            "--dead-letters", str(tmp_path / "dead.jsonl"),
            env=subprocess_environ(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout_b, stderr_b = await asyncio.wait_for(proc.communicate(), 60)
        stdout = stdout_b.decode()
        assert proc.returncode == 0, stderr_b.decode()
        items = {str(i["h1"]) for i in read_items(out)}
        assert items == {"ok a", "ok r"}
        assert f"dead letter: {site.url('/status/503')} (http_503, 3 attempts)" in stdout
        assert read_items(tmp_path / "dead.jsonl") == [
            {"url": site.url("/status/503"), "reason": "http_503", "attempts": 3}
        ]
        assert "1 dead letters written to" in stdout
        assert "retries/http_503: 4" in stdout  # 2 for the flaky page, 2 for the dead one
        assert "retries/http_429: 1" in stdout
        hits = site.app[HITS]
        flaky = [t for path, t, _ in hits if path.startswith("/flaky/a")]
        assert len(flaky) == 3
        dead = [t for path, t, _ in hits if path == "/status/503"]
        assert len(dead) == 3
        after = [t for path, t, _ in hits if path.startswith("/retry-after/r")]
        assert len(after) == 2
        assert after[1] - after[0] >= 2.0  # Retry-After: 2 was honoured
        print(f"\nRetry-After: 2 -> retried after {after[1] - after[0]:.2f}s")


def test_job_dir_of_another_spider_is_refused(tmp_path: Path, spider_file: Path, site: str) -> None:
    job = tmp_path / "job"
    job.mkdir()
    journal = Journal(job)
    journal.commit([], {"spider": "other"})
    journal.close()
    result = subprocess.run(
        [sys.executable, "-m", "spiderfarm", "crawl", str(spider_file), "-a", f"start_url={site}",
         "--job-dir", str(job), "--workers", "1"],
        env=subprocess_environ(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "holds a crawl of spider 'other', not 'slowcat'" in result.stderr


def test_second_sigint_exits_at_once_and_the_job_dir_still_resumes(
    tmp_path: Path, spider_file: Path, site: str
) -> None:
    argv, out, first = crawl_with_job_dir(tmp_path, spider_file, site)
    first.send_signal(signal.SIGINT)
    time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # the impatient second Ctrl-C
    started = time.monotonic()
    _, stderr = first.communicate(timeout=30)
    print(f"\nsecond Ctrl-C: exited {time.monotonic() - started:.2f}s later")
    assert first.returncode == 130
    assert "interrupted: items so far are in the feed" in stderr
    # The job dir is consistent: resuming finishes the crawl with every item exactly once.
    second = subprocess.run(
        argv, env=subprocess_environ(), capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr
    assert_exact_feed(out, site)
