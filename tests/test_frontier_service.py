"""Service mode in the frontier (issue 12), on a fake clock: submitted requests and the
results they lead to, roots, the bounded result queue, a farm that does not finish,
``idle_close_s``, the idle workers' long poll, and roots in the job journal."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from spiderfarm.frontier import Frontier
from spiderfarm.frontier.results import Results, result_dict
from spiderfarm.journal import Journal
from spiderfarm.protocol import FINISHED, RUNNING, Outcome
from spiderfarm.settings import Settings
from tests.test_frontier import Clock, Sink, entry, fail, item, lease, ok, retry, urls

A, B = "http://a.test/", "http://b.test/"


def serving(
    settings: Mapping[str, Any] | None = None, allowed: tuple[str, ...] = ()
) -> tuple[Frontier, Sink, Clock]:
    clock, sink = Clock(), Sink()
    plain = {"obey_robots": False, "autothrottle": False, "randomize_delay": False}
    frontier = Frontier(
        Settings.merge(plain, settings or {}), allowed_domains=allowed, write_items=sink,
        clock=clock, serving=True,
    )  # fmt: skip
    return frontier, sink, clock


def results(frontier: Frontier) -> list[dict[str, Any]]:
    """Every result waiting, as clients get them."""
    assert frontier.results is not None
    taken: list[dict[str, Any]] = []
    while True:
        try:
            taken += [result_dict(r) for r in frontier.results.get(block=False, most=100)]
        except queue.Empty:
            return taken


def test_each_submitted_request_ends_in_one_result() -> None:
    frontier, sink, _ = serving({"depth_limit": 1}, allowed=("a.test",))
    deep = entry(f"{A}deep", depth=2)
    accepted, refused = frontier.submit(
        [entry(f"{A}1"), entry(f"{A}1"), entry(f"{B}x"), deep, entry(f"{A}2")]
    )
    assert accepted == [f"{A}1", f"{A}2"]
    assert refused == [(f"{A}1", "filtered/duplicate"), (f"{B}x", "filtered/offsite"),
                       (f"{A}deep", "filtered/depth")]  # fmt: skip
    assert [(r["url"], r["ok"], r["reason"]) for r in results(frontier)] == [
        (f"{A}1", False, "filtered/duplicate"),
        (f"{B}x", False, "filtered/offsite"),
        (f"{A}deep", False, "filtered/depth"),
    ]
    first, second = lease(frontier)
    frontier.exchange("w1", [ok(first[0], [item(1), item(2)])], 0)
    frontier.exchange("w1", [fail(second[0], "http_404")], 0)
    assert results(frontier) == [
        {"url": f"{A}1", "ok": True, "status": 200, "reason": None,
         "items": [{"n": 1}, {"n": 2}], "meta": {}, "root": f"{A}1"},
        {"url": f"{A}2", "ok": False, "status": 404, "reason": "http_404", "items": [],
         "meta": {}, "root": f"{A}2"},
    ]  # fmt: skip
    assert sink.lines == [item(1), item(2)]  # the feed has them too
    assert frontier.stats["submitted"] == 5


def test_descendants_carry_their_root_and_other_requests_give_no_result() -> None:
    frontier, _, _ = serving()
    frontier.push([entry(f"{A}start")])  # a start request: no result
    frontier.submit([entry(f"{A}root")])
    by_url = {wire[0]: lease_id for lease_id, _, wire in lease(frontier)}
    children = [entry(f"{A}c1"), entry(f"{A}c2"), entry(f"{A}start")]  # the last: seen
    frontier.exchange(
        "w1", [ok(by_url[f"{A}root"], new=children), ok(by_url[f"{A}start"], [item(0)])], 0
    )
    assert [(r["url"], r["root"]) for r in results(frontier)] == [(f"{A}root", f"{A}root")]
    leases = lease(frontier)
    assert urls(leases) == [f"{A}c1", f"{A}c2"]
    grandchild = entry(f"{A}g")
    frontier.exchange("w1", [ok(leases[0][0], new=[grandchild]), fail(leases[1][0], "timeout")], 0)
    (g,) = lease(frontier)
    frontier.exchange("w1", [ok(g[0], [item(7)])], 0)
    assert [(r["url"], r["ok"], r["root"]) for r in results(frontier)] == [
        (f"{A}c1", True, f"{A}root"),
        (f"{A}c2", False, f"{A}root"),
        (f"{A}g", True, f"{A}root"),
    ]


def test_retries_give_one_result_at_the_end() -> None:
    frontier, _, clock = serving({"max_retries": 1, "retry_backoff_s": 1})
    frontier.submit([entry(f"{A}flaky")])
    (first,) = lease(frontier)
    frontier.exchange("w1", [retry(first[0])], 0)
    assert results(frontier) == []
    clock.advance(10)
    (again,) = lease(frontier)
    frontier.exchange("w1", [retry(again[0])], 0)
    assert [(r["url"], r["ok"], r["status"], r["reason"]) for r in results(frontier)] == [
        (f"{A}flaky", False, 503, "http_503")
    ]
    assert frontier.dead_letters == [(f"{A}flaky", "http_503", 2)]


def test_a_request_lost_with_its_worker_gives_a_result() -> None:
    frontier, _, clock = serving({"max_retries": 0, "worker_timeout_s": 5})
    frontier.submit([entry(f"{A}x")])
    lease(frontier, "w1")
    clock.advance(6)
    frontier.tick()
    assert [(r["url"], r["reason"]) for r in results(frontier)] == [(f"{A}x", "worker_lost")]


def test_robots_txt_disallowing_a_submitted_request_gives_a_result() -> None:
    frontier, _, _ = serving({"obey_robots": True})
    frontier.submit([entry(f"{A}private/1"), entry(f"{A}public")])
    (robots,) = lease(frontier)
    assert robots[2][0] == f"{A}robots.txt"
    text = "User-agent: *\nDisallow: /private"
    outcome: Outcome = (robots[0], "robots", "ok", [], [text], (200, 0.01, 0.0))
    frontier.exchange("w1", [outcome], 0)
    assert [(r["url"], r["reason"]) for r in results(frontier)] == [
        (f"{A}private/1", "filtered/robots")
    ]
    (page,) = lease(frontier)
    # A link the page found that robots.txt disallows is filtered with no result.
    frontier.exchange("w1", [ok(page[0], new=[entry(f"{A}private/2")])], 0)
    assert [r["url"] for r in results(frontier)] == [f"{A}public"]
    assert frontier.stats["filtered/robots"] == 2


def test_a_serving_frontier_does_not_finish_when_its_queue_empties() -> None:
    frontier, _, clock = serving()
    assert frontier.tick() == RUNNING
    frontier.submit([entry(f"{A}1")])
    (only,) = lease(frontier)
    frontier.exchange("w1", [ok(only[0])], 0)
    clock.advance(3600)
    assert frontier.tick() == RUNNING
    frontier.close("shutdown")
    assert frontier.state == FINISHED and frontier.close_reason == "shutdown"


def test_idle_close_s_counts_from_the_last_work() -> None:
    frontier, _, clock = serving({"idle_close_s": 30})
    assert frontier.tick() == RUNNING  # idle from now
    clock.advance(20)
    frontier.submit([entry(f"{A}1")])
    (only,) = lease(frontier)
    for _ in range(20):  # leased (to a live worker): not idle, however long
        clock.advance(5)
        frontier.heartbeat("w1", 0.0)
        assert frontier.tick() == RUNNING
    frontier.exchange("w1", [ok(only[0])], 0)
    clock.advance(29.9)
    assert frontier.tick() == RUNNING
    clock.advance(0.1)
    assert frontier.tick() == FINISHED
    assert frontier.close_reason == "idle_close"


def test_an_idle_worker_waits_for_work_and_wakes_when_some_is_submitted() -> None:
    frontier, _, _ = serving()
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(frontier.exchange("w1", [], 10, wait_s=60.0))
    )
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    assert got == []  # waiting: no answer yet
    frontier.submit([entry(f"{A}1")])
    waiter.join(30)
    assert not waiter.is_alive() and time.monotonic() - started < 30  # woken, not timed out
    leases, refused, state = got[0]
    assert urls(leases) == [f"{A}1"] and refused == [] and state == RUNNING


def test_a_worker_holding_leases_or_asking_for_none_never_waits() -> None:
    frontier, _, _ = serving()
    frontier.submit([entry(f"{A}1")])
    assert len(lease(frontier, "w1")) == 1
    started = time.monotonic()
    assert frontier.exchange("w1", [], 10, wait_s=30.0)[0] == []  # it holds a lease
    assert frontier.exchange("w2", [], 0, wait_s=30.0)[0] == []  # it asked for nothing
    assert time.monotonic() - started < 10


def test_a_close_wakes_the_waiting_workers() -> None:
    frontier, _, _ = serving()
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(frontier.exchange("w1", [], 5, wait_s=60.0))
    )
    waiter.start()
    time.sleep(0.3)
    frontier.close("shutdown")
    waiter.join(30)
    assert not waiter.is_alive() and got[0][2] == FINISHED


def test_the_result_queue_drops_past_its_caps_and_counts() -> None:
    held = Results(max_results=3, max_bytes=10**9)
    row = ("http://a.test/", True, 200, None, [], None, "http://a.test/")
    assert [held.put(row) for _ in range(5)] == [True, True, True, False, False]
    assert held.counts()["dropped"] == 2 and held.qsize() == 3
    assert len(held.get(most=10)) == 3
    small = Results(max_results=100, max_bytes=2_000)
    big = ("http://a.test/", True, 200, None, ["x" * 1_000], None, "http://a.test/")
    assert [small.put(big), small.put(big)] == [True, False]  # 1,000 bytes + overhead each
    assert small.counts() == {"held": 1, "held_bytes": 1_526, "produced": 2, "taken": 0,
                              "dropped": 1, "max_results": 100, "max_bytes": 2_000}  # fmt: skip


def test_result_queue_get_behaves_as_queue_get() -> None:
    held = Results(10, 10**9)
    with pytest.raises(queue.Empty):
        held.get(block=False)
    with pytest.raises(queue.Empty):
        held.get(timeout=0.05)
    with pytest.raises(ConnectionAbortedError):
        held.get(alive=lambda: False)  # a client that has gone takes nothing
    rows = [(f"http://a.test/{n}", True, 200, None, [], None, "r") for n in range(3)]
    for row in rows:
        held.put(row)
    taken = held.get(most=2)
    assert taken == rows[:2]
    held.unget(taken)  # a reply that could not be sent: first in line again
    assert held.get(most=5) == rows and held.counts()["taken"] == 3


def test_roots_survive_in_the_job_journal(tmp_path: Path) -> None:
    settings = Settings.merge({"obey_robots": False, "autothrottle": False})
    frontier = Frontier(settings, journaled=True, serving=True)
    frontier.submit([entry(f"{A}1"), entry(f"{A}2")])
    (first, second) = lease(frontier)
    frontier.exchange("w1", [ok(first[0], new=[entry(f"{A}child")])], 0)
    journal = Journal(tmp_path / "job")
    ops, _, stats, _, state, _ = frontier.checkpoint(dict)
    journal.commit(ops, {"spider": "s", "stats": json.dumps(stats), "state": state})
    saved = journal.load()
    assert saved is not None
    assert sorted(journal.roots()) == [(2, f"{A}2"), (3, f"{A}1")]  # not done: 2 and child
    resumed = Frontier(settings, journaled=True, serving=True)
    resumed.restore(journal.fingerprints(), journal.queued(), saved.stats, [], journal.roots())
    journal.close()
    by_url = {wire[0]: lease_id for lease_id, _, wire in lease(resumed)}
    assert sorted(by_url) == [f"{A}2", f"{A}child"]
    resumed.exchange("w1", [ok(by_url[f"{A}child"]), ok(by_url[f"{A}2"])], 0)
    assert [(r["url"], r["root"]) for r in results(resumed)] == [
        (f"{A}child", f"{A}1"), (f"{A}2", f"{A}2")
    ]  # fmt: skip
    del second
