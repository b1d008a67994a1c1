"""The console (spiderfarm/console/): its page's data, the token rule, /metrics, the
actions, the stats log line and spider stats, against real server and worker processes
crawling the demo catalogue served by a real local site."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spiderfarm.console import console_token
from spiderfarm.console.snapshots import History
from spiderfarm.security import decode_key
from tests.console_farm import call, console_farm, demo_site, non_loopback_ip, wait_for
from tests.farm import KEY_HEX, read_items, run_cli, write_key

STATS_SPIDER = str(Path(__file__).parent / "console_spiders" / "statsspider.py")
# 20 pages a second (a fixed delay, one at a time): the crawl lasts while we look at it.
SLOW = ["-s", "delay_s=0.05", "-s", "autothrottle=false", "--console", "127.0.0.1:0"]


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


# -- the chart's history -----------------------------------------------------------------


def test_history_stays_small_and_keeps_every_page() -> None:
    history = History(capacity=8, width_s=1.0)
    for second in range(1001):  # 1,000 seconds, 10 pages and 1 error each
        history.add(float(second), second * 10, second)
    assert len(history.buckets) <= 8
    assert sum(b[2] for b in history.buckets) == 10_000
    assert sum(b[3] for b in history.buckets) == 1_000
    assert history.buckets[0][0] == 0.0 and history.buckets[-1][1] == 1000.0
    assert {round(p[1], 6) for p in history.points()} == {10.0}
    assert {round(p[2], 6) for p in history.points()} == {1.0}


# -- a loopback console: data, metrics, actions --------------------------------------------


def test_console_numbers_metrics_and_actions_match_status(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    with demo_site(2000) as site, console_farm(
        tmp_path, key, ["spiders/catalogue.py", "-a", f"start_url={site}", *SLOW,
                        "-o", str(tmp_path / "items.jsonl")],
    ) as farm:  # fmt: skip
        farm.start_workers(1)
        wait_for(lambda: farm.state()["pages"] >= 20, 30, "20 pages")
        status = farm.paused_and_still()
        state = farm.state()
        stats = status["stats"]
        assert state["paused"] is True and status["paused"] is True
        assert (state["pages"], state["items"], state["queued"], state["in_flight"]) == (
            stats["pages"], stats["items"], status["queued"], 0,
        )  # fmt: skip
        assert state["workers"] == status["workers"] == 1
        assert state["seen"] == status["seen"]
        assert len(state["chart"]) >= 3 and max(p[1] for p in state["chart"]) > 0
        (worker,) = state["worker_rows"]
        assert worker["pages"] == stats["pages"] and worker["state"] == "idle"
        assert worker["id"] in status["worker_detail"]

        # Paused: exactly nothing more is fetched.
        pages = stats["pages"]
        wait_for(lambda: farm.state()["taken_at"] > state["taken_at"] + 1.5, 10, "a snapshot")
        assert farm.status()["stats"]["pages"] == pages

        # The host table, sorted and paginated by the server.
        (host,) = status["hosts"]
        code, body = call(f"{farm.url}api/hosts?sort=pages&order=desc&page=0&per_page=10")
        assert code == 200
        table = json.loads(body)
        assert table["total"] == 1
        (row,) = table["rows"]
        h = status["hosts"][host]
        assert (row["host"], row["queued"], row["pages"], row["errors"], row["robots"]) == (
            host, h["queued"], h["pages"], h["errors"], "ready",
        )  # fmt: skip
        assert call(f"{farm.url}api/hosts?sort=bogus")[0] == 400

        # /metrics, parsed with prometheus_client's parser, says what status says.
        code, body = call(f"{farm.url}metrics")
        assert code == 200
        m = metrics_of(body.decode())
        assert m[("spiderfarm_pages_total", ())] == stats["pages"]
        assert m[("spiderfarm_items_total", ())] == stats["items"]
        assert m[("spiderfarm_queued", ())] == status["queued"]
        assert m[("spiderfarm_in_flight", ())] == 0
        assert m[("spiderfarm_workers", ())] == 1
        assert m[("spiderfarm_paused", ())] == 1
        assert m[("spiderfarm_dead_letters_total", ())] == stats.get("dead_letters", 0)
        assert m[("spiderfarm_requests_seen_total", ())] == status["seen"]
        assert m[("spiderfarm_host_delay_seconds", (("host", host),))] == h["delay_s"]

        # Resume: pages come again; pause the one host: they stop again, exactly.
        assert call(f"{farm.url}api/resume", data={}, headers={"X-Spiderfarm-Token": "-"})[0] == 200
        wait_for(lambda: farm.status()["stats"]["pages"] >= pages + 10, 30, "pages after resume")
        code, _ = call(
            f"{farm.url}api/pause", data={"host": host}, headers={"X-Spiderfarm-Token": "-"}
        )
        assert code == 200
        wait_for(lambda: farm.status()["in_flight"] == 0, 30, "in flight to end")
        held = farm.status(detail=True)
        assert held["paused"] is False and held["paused_hosts"] == [host]
        assert held["hosts"][host]["paused"] is True
        time.sleep(1.0)
        assert farm.status()["stats"]["pages"] == held["stats"]["pages"]

        # A POST without the custom header is refused (no other site's page can act here).
        assert call(f"{farm.url}api/stop", data={})[0] == 403
        # A Host header naming another machine is refused (DNS rebinding).
        assert call(f"{farm.url}api/state", headers={"Host": "evil.example:80"})[0] == 403
        # Stop, as Ctrl-C does: the server finishes and prints its summary.
        assert call(f"{farm.url}api/stop", data={}, headers={"X-Spiderfarm-Token": "-"})[0] == 200
        out = farm.stop()
    assert re.search(r"crawl shutdown: \d+ pages", out), out
    assert len(read_items(tmp_path / "items.jsonl")) == held["stats"]["items"]


# -- off loopback: the token ---------------------------------------------------------------


def test_a_non_loopback_console_needs_the_token(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    ip = non_loopback_ip()
    with demo_site(500) as site, console_farm(
        tmp_path, key, ["spiders/catalogue.py", "-a", f"start_url={site}", *SLOW[:-1], f"{ip}:0"],
    ) as farm:  # fmt: skip
        base = farm.url.replace("0.0.0.0", "127.0.0.1")
        assert "token required" in farm.server.output()
        farm.start_workers(1)
        token = console_token(decode_key(KEY_HEX))
        printed = run_cli(["console-token", "--authkey-file", str(key)])
        assert printed.stdout.strip() == token
        for path in ("api/state", "api/hosts", "metrics"):
            assert call(base + path)[0] == 401
            assert call(base + path, token="0" * 64)[0] == 401
            assert call(base + path, token=token)[0] == 200
        assert call(base + "api/state", headers={"X-Spiderfarm-Token": token})[0] == 200
        # The page itself holds no data: it loads, and asks for the token.
        code, page = call(base)
        assert code == 200 and b'"token_required": true' in page
        # Actions need it too; with it and the header they work.
        assert call(base + "api/pause", data={}, headers={"X-Spiderfarm-Token": "x"})[0] == 401
        assert call(base + "api/pause", data={}, headers={"X-Spiderfarm-Token": token})[0] == 200
        wait_for(lambda: farm.state(token=token, base=base)["paused"], 10, "the paused state")


def test_a_console_token_file_replaces_the_derived_token(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    token_file = tmp_path / "console.token"
    token_file.write_text("t" * 16 + "0123456789abcdef" + "\n")
    token_file.chmod(0o600)
    with demo_site(50) as site, console_farm(
        tmp_path, key, ["spiders/catalogue.py", "-a", f"start_url={site}", "--console",
                        "127.0.0.1:0", "--console-token-file", str(token_file)],
    ) as farm:  # fmt: skip
        assert call(farm.url + "api/state")[0] == 401
        assert call(farm.url + "api/state", token=console_token(decode_key(KEY_HEX)))[0] == 401
        assert call(farm.url + "api/state", token="t" * 16 + "0123456789abcdef")[0] == 200


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--console", "nowhere"], "--console 'nowhere': address 'nowhere' must be HOST:PORT"),
        (["--console", "127.0.0.1:99999"], "--console '127.0.0.1:99999': address"),
        (["--console", "0.0.0.0:0", "--console-token-file", "/nonexistent/t"],
         "cannot read console token file '/nonexistent/t'"),
        (["--console", "192.0.2.77:0"], "cannot serve the console on 192.0.2.77:0"),
    ],
)  # fmt: skip
def test_bad_console_options_say_what_to_do(tmp_path: Path, extra: list[str], message: str) -> None:
    key = write_key(tmp_path)
    done = run_cli(
        ["crawl", "spiders/catalogue.py", "--workers", "1", "--authkey-file", str(key),
         "-a", "start_url=http://127.0.0.1:9/", *extra], timeout_s=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"error: {message}" in done.stderr


def test_a_weak_token_file_and_a_crawl_with_no_key_to_derive_from(tmp_path: Path) -> None:
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    short.chmod(0o600)
    base = [
        "crawl",
        "spiders/catalogue.py",
        "--workers",
        "1",
        "-a",
        "start_url=http://127.0.0.1:9/",
    ]
    done = run_cli([*base, "--console-token-file", str(short)], timeout_s=60)
    assert done.returncode == 2
    assert "console token file" in done.stderr and "at least 32 random" in done.stderr
    done = run_cli([*base, "--console", "0.0.0.0:0"], timeout_s=60)
    assert done.returncode == 2
    assert "a console off loopback needs a token" in done.stderr
    assert "--authkey-file KEY" in done.stderr


# -- the stats line, and spider stats ---------------------------------------------------------


def test_stats_line_is_logged_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    with demo_site(60) as site:
        args = ["crawl", "spiders/catalogue.py", "--workers", "1", "--no-console", "-a",
                f"start_url={site}", "-s", "delay_s=0.02", "-s", "autothrottle=false"]  # fmt: skip
        done = run_cli([*args, "-s", "log_stats_s=0.3"], timeout_s=60)
        quiet = run_cli([*args, "-s", "log_stats_s=0"], timeout_s=60)
    assert done.returncode == 0, done.stderr
    lines = re.findall(
        r"Crawled (\d+) pages \(at (\d+) pages/min\), scraped (\d+) items \(at (\d+) items/min\)",
        done.stderr,
    )
    assert len(lines) >= 2, done.stderr
    pages = [int(p) for p, _, _, _ in lines]
    assert pages == sorted(pages) and pages[-1] <= 60
    assert "console:" not in done.stdout + done.stderr
    assert quiet.returncode == 0 and "Crawled" not in quiet.stderr


def test_spider_stats_merge_across_two_workers(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    out = tmp_path / "items.jsonl"
    job = tmp_path / "job"
    with demo_site(300) as site, console_farm(
        tmp_path, key, [STATS_SPIDER, "-a", f"start_url={site}", "-o", str(out),
                        "--job-dir", str(job), "-s", "delay_s=0.004"],
    ) as farm:  # fmt: skip
        farm.start_workers(2)
        output = farm.stop(60)
    items = read_items(out)
    n = len(items)
    assert n == 300, output
    prices = [float(str(i["price"])) for i in items]
    expected = {
        "pages_seen": n, "from_100": 100 + n, "pipeline/items": n, "constant": 7,
        "price_max": max(prices), "price_min": min(prices),
    }  # fmt: skip
    assert f"spider stat pages_seen: {n}" in output
    # The job dir keeps them, as it keeps the crawl's other stats.
    with sqlite3.connect(job / "frontier.sqlite3") as db:
        (saved,) = db.execute("SELECT value FROM meta WHERE key = 'spider_stats'").fetchone()
    merged = json.loads(saved)
    by_pid = {k: v for k, v in merged.items() if k.startswith("pages_by_pid/")}
    assert {k: merged[k] for k in expected} == expected
    assert len(by_pid) == 2 and sum(by_pid.values()) == n  # both workers counted, merged
    assert set(merged) == {*expected, *by_pid}


def test_spider_stats_reach_status_the_console_and_metrics(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    with demo_site(2000) as site, console_farm(
        tmp_path, key, [STATS_SPIDER, "-a", f"start_url={site}", *SLOW],
    ) as farm:  # fmt: skip
        farm.start_workers(1)
        wait_for(lambda: farm.state()["pages"] >= 10, 30, "10 pages")
        status = farm.paused_and_still()
        spider_stats = status["spider_stats"]
        assert spider_stats["pages_seen"] == status["stats"]["pages"]
        assert farm.state()["spider_stats"] == dict(sorted(spider_stats.items()))
        m = metrics_of(call(farm.url + "metrics")[1].decode())
        exported = {
            dict(labels)["key"]: v for (name, labels), v in m.items()
            if name == "spiderfarm_spider_stat"
        }  # fmt: skip
        assert exported == spider_stats
        table = run_cli(["status", "--connect", farm.server.address, "--authkey-file", str(key)])
        assert f"pages_seen {spider_stats['pages_seen']}" in table.stdout
        assert "paused: leasing, farm-wide" in table.stdout


# -- service mode: the push box ----------------------------------------------------------


def test_the_push_box_queues_urls_in_a_serving_farm(tmp_path: Path, quotes_site: str) -> None:
    import spiderfarm

    key = write_key(tmp_path)
    spiders = str(Path(__file__).parent / "service_spiders")
    feed = tmp_path / "feed.jsonl"
    args = ["pages", "--serve", "--spiders-dir", spiders, "-s", "obey_robots=false",
            "--console", "127.0.0.1:0", "-o", str(feed)]  # fmt: skip
    with console_farm(tmp_path, key, args) as farm:
        farm.start_workers(1, "--spiders-dir", spiders)
        tasks = [f"{quotes_site}page/1/", f"{quotes_site}page/2/", "ftp://nowhere/", "x"]
        submitted = {"tasks": tasks}
        assert call(f"{farm.url}api/submit", data=submitted)[0] == 403  # no header: refused
        code, body = call(
            f"{farm.url}api/submit", data=submitted, headers={"X-Spiderfarm-Token": "-"}
        )
        assert code == 200, body
        answer = json.loads(body)
        assert answer["accepted"] == 2 and answer["filtered"] == []
        assert [i for i, _ in answer["refused"]] == [2, 3]
        assert "unsupported URL scheme 'ftp'" in answer["refused"][0][1]
        client = spiderfarm.connect(farm.server.address, authkey=KEY_HEX)
        urls = sorted(r["url"] for r in client.results(timeout=30, limit=2))
        assert urls == tasks[:2]
        bad = call(
            f"{farm.url}api/submit", data={"tasks": "x"}, headers={"X-Spiderfarm-Token": "-"}
        )
        assert bad[0] == 400
    assert len(read_items(feed)) == 2


def test_the_push_box_says_a_farm_not_serving_takes_no_urls(tmp_path: Path) -> None:
    key = write_key(tmp_path)
    with demo_site(50) as site, console_farm(
        tmp_path, key, ["spiders/catalogue.py", "-a", f"start_url={site}", *SLOW],
    ) as farm:  # fmt: skip
        code, body = call(
            f"{farm.url}api/submit", data={"tasks": [site]}, headers={"X-Spiderfarm-Token": "-"}
        )
        assert code == 409 and b"not started with --serve" in body
