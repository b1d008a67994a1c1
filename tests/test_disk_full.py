"""A full disk: nothing lost, nothing twice, whatever the disk does.

Real ``crawl`` processes write their feeds, or their job dir, or both, on a real 2 MiB
tmpfs that a filler file has partly taken. The first run fills it: it must close as
``feed_error`` (or ``journal_error``), print its summary, name the path, exit 1 within a
deadline and print no traceback, and the feeds must hold exactly the items the summary
counts. Then room comes back (the filler goes, or the tmpfs is remounted bigger) and the
same command, with the same ``--job-dir``, must finish the crawl with every item exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spiderfarm.demosite import Catalogue
from tests.sites import run_subprocess_site, stop_subprocess, subprocess_environ
from tests.tmpfs import Tmpfs

pytestmark = pytest.mark.timeout(300)

PAGES = 1500
DISK_KIB = 2048
DEADLINE_S = 90  # a run that takes longer has hung

# About 1.2 KB an item, 1.8 MB for the site: more than a part-filled 2 MiB disk holds,
# and all of it fits once the filler is gone. The callback sleeps a little, so that
# pages are in flight when the disk fills (the hang of issue 10 needed that).
FAT_SPIDER = """
import asyncio
from spiderfarm import Request, Spider

class FatCatalogue(Spider):
    name = "fatcat"
    custom_settings = {"concurrency": 8, "per_host_concurrency": 64, "autothrottle": False}
    start_url = ""

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    async def parse(self, response):
        await asyncio.sleep(0.02)
        yield {
            "url": response.url,
            "sku": response.css("span.sku::text").get(),
            "text": response.css("p.description::text").get("")[:1100],
        }
        for request in response.follow_all(css="a.related", callback=self.parse):
            yield request
"""


@pytest.fixture(scope="module")
def sites() -> Iterator[Callable[[int], str]]:
    """``sites(seed)``: the base URL of a demo catalogue of ``PAGES`` pages with that seed
    (started on first use, one process per seed)."""
    running: dict[int, tuple[subprocess.Popen[str], str]] = {}

    def site(seed: int) -> str:
        if seed not in running:
            running[seed] = run_subprocess_site(
                [sys.executable, "-m", "spiderfarm.demosite", "--port", "0",
                 "--pages", str(PAGES), "--seed", str(seed)]
            )  # fmt: skip
        return running[seed][1]

    yield site
    for proc, _ in running.values():
        stop_subprocess(proc)


def run(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv, env=subprocess_environ(), capture_output=True, text=True,
            timeout=DEADLINE_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"the crawl hung: no exit within {DEADLINE_S}s")
    return result, time.monotonic() - started


def urls_in(feed: Path) -> list[str]:
    """The items' URLs, in file order; fails on a torn or unreadable item."""
    text = feed.read_text(encoding="utf-8")
    if feed.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [row["url"] for row in rows]
    if feed.suffix == ".json":
        return [str(item["url"]) for item in json.loads(text)]
    return [str(json.loads(line)["url"]) for line in text.splitlines()]


def counted(stdout: str, reason: str) -> int:
    match = re.search(rf"^crawl {reason}: (\d+) pages, (\d+) items", stdout, re.M)
    assert match, f"no summary for {reason!r} in {stdout!r}"
    return int(match.group(2))


def assert_clean_failure(result: subprocess.CompletedProcess[str], reason: str) -> int:
    """Exit 1 with the summary and no traceback; returns the items the summary counts."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return counted(result.stdout, reason)


def assert_every_item_once(feeds: list[Path], base: str) -> None:
    expected = sorted(base.rstrip("/") + p for p in Catalogue(pages=PAGES).paths())
    for feed in feeds:
        assert sorted(urls_in(feed)) == expected, f"{feed}: not every item exactly once"


def fat_spider(tmp_path: Path) -> Path:
    path = tmp_path / "fatcat.py"
    path.write_text(textwrap.dedent(FAT_SPIDER))
    return path


@pytest.mark.parametrize(
    ("seed", "filler_kib", "room_back", "formats"),
    [
        (1, 500, "remove", ("jsonl",)),
        (2, 900, "remount", ("jsonl", "json")),  # two feeds need more than 2 MiB in the end
        (3, 1300, "remove", ("csv",)),
    ],
)
def test_a_feed_on_a_full_disk_loses_nothing_and_resumes_exactly(
    tmp_path: Path,
    tmpfs: Callable[[str, int], Tmpfs],
    sites: Callable[[int], str],
    seed: int,
    filler_kib: int,
    room_back: str,
    formats: tuple[str, ...],
) -> None:
    base = sites(seed)
    disk = tmpfs("disk", DISK_KIB)
    disk.fill(filler_kib)
    feeds = [disk.path / f"items.{fmt}" for fmt in formats]
    job = tmp_path / "job"
    argv = [sys.executable, "-m", "spiderfarm", "crawl", str(fat_spider(tmp_path)),
            "-a", f"start_url={base}", "--job-dir", str(job), "--workers", "2"]  # fmt: skip
    for feed in feeds:
        argv += ["-o", str(feed)]
    first, first_s = run(argv)
    items = assert_clean_failure(first, "feed_error")
    assert any(
        f"error: cannot write the feed '{feed}': No space left on device" in first.stderr
        for feed in feeds  # the one that filled the disk, which may be either
    ), first.stderr
    assert f"job dir '{job}' holds the rest of the crawl" in first.stderr
    assert 0 < items < PAGES
    # Written means in the file: the feeds hold the items counted, each whole, once.
    for feed in feeds:
        if feed.suffix == ".json" and not feed.read_text().rstrip().endswith("]"):
            continue  # its closing "]" did not fit: the resume reopens the array
        urls = urls_in(feed)
        assert len(urls) == len(set(urls)) == items, feed
    if room_back == "remove":
        disk.free()
    else:
        disk.grow(8 * DISK_KIB)
    second, second_s = run(argv)
    assert second.returncode == 0, second.stderr
    assert f"crawl finished: {PAGES} pages, {PAGES} items" in second.stdout
    assert_every_item_once(feeds, base)
    print(f"\nfull feed disk: {items} items, exit in {first_s:.1f}s; resumed in {second_s:.1f}s")


@pytest.mark.parametrize(
    ("where", "filler_kib"),
    [("job dir", 1850), ("job dir", 1950), ("both", 1200)],
)
def test_a_job_dir_on_a_full_disk_loses_nothing_and_resumes_exactly(
    tmp_path: Path,
    tmpfs: Callable[[str, int], Tmpfs],
    sites: Callable[[int], str],
    where: str,
    filler_kib: int,
) -> None:
    base = sites(1)
    disk = tmpfs("disk", DISK_KIB)
    disk.fill(filler_kib)
    job = disk.path / "job"
    feed = (disk.path if where == "both" else tmp_path) / "items.jsonl"
    argv = [sys.executable, "-m", "spiderfarm", "crawl", str(fat_spider(tmp_path)),
            "-a", f"start_url={base}", "-o", str(feed), "--job-dir", str(job),
            "--workers", "2"]  # fmt: skip
    first, first_s = run(argv)
    reason = "feed_error" if "crawl feed_error:" in first.stdout else "journal_error"
    items = assert_clean_failure(first, reason)
    assert f"cannot write the job dir '{job}'" in first.stderr or (
        where == "both" and f"cannot write the feed '{feed}'" in first.stderr
    ), first.stderr
    assert f"job dir '{job}' holds the" in first.stderr  # and what to do
    urls = urls_in(feed)
    assert len(urls) == len(set(urls)) == items  # a clean close: the counted items, once
    if where == "both":
        disk.grow(8 * DISK_KIB)  # the feed and the journal need more than 2 MiB in the end
    else:
        disk.free()
    second, second_s = run(argv)
    assert second.returncode == 0, second.stderr
    assert f"crawl finished: {PAGES} pages, {PAGES} items" in second.stdout
    assert_every_item_once([feed], base)
    print(f"\nfull {where} disk: {items} items, exit in {first_s:.1f}s; resumed in {second_s:.1f}s")
