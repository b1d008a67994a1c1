"""The frontier's rules (dedup, scope, politeness, leases, outcomes, liveness, limits),
driven by a fake clock so that every time-dependent outcome is exact."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from spiderfarm.frontier import Frontier
from spiderfarm.http import W_URL, Request
from spiderfarm.protocol import Lease, Outcome, PushEntry
from spiderfarm.settings import Settings
from spiderfarm.urls import Fingerprinter, host_of

FP = Fingerprinter()
INFO_OK = (200, 0.01, 0.0)


class Clock:
    """A clock the test moves by hand; the frontier only ever reads it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sink:
    """Records every ``write_items`` call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, lines: list[str]) -> None:
        self.calls.append(list(lines))

    @property
    def lines(self) -> list[str]:
        return [line for call in self.calls for line in call]


def entry(url: str, *, priority: int = 0, dont_filter: bool = False, depth: int = 0) -> PushEntry:
    req = Request(url, priority=priority, dont_filter=dont_filter)
    req.depth = depth
    return (FP.fingerprint(url), host_of(url), req.to_wire())


def make(
    settings: Mapping[str, Any] | None = None,
    allowed: Iterable[str] = (),
    clock: Clock | None = None,
) -> tuple[Frontier, Sink, Clock]:
    clock = clock or Clock()
    sink = Sink()
    # The scheduling rules under test here, without robots.txt or adaptive delays
    # (tests/test_politeness.py covers those).
    plain = {"obey_robots": False, "autothrottle": False, "randomize_delay": False}
    frontier = Frontier(
        Settings.merge(plain, settings or {}), allowed_domains=allowed, write_items=sink,
        clock=clock,
    )  # fmt: skip
    return frontier, sink, clock


def lease(frontier: Frontier, worker: str = "w1", want: int = 100) -> list[Lease]:
    leases, refused, _ = frontier.exchange(worker, [], want)
    assert refused == []
    return leases


def urls(leases: Iterable[Lease]) -> list[str]:
    return [wire[W_URL] for _, _, wire in leases]


def ok(
    lease_id: int,
    items: Iterable[str] = (),
    new: Iterable[PushEntry] = (),
    reason: str = "",
) -> Outcome:
    return (lease_id, "ok", reason, list(new), list(items), INFO_OK)


def retry(lease_id: int, reason: str = "http_503", retry_after_s: float = 0.0) -> Outcome:
    return (lease_id, "retry", reason, [], [], (503, 0.01, retry_after_s))


def fail(
    lease_id: int,
    reason: str,
    items: Iterable[str] = (),
    new: Iterable[PushEntry] = (),
) -> Outcome:
    return (lease_id, "fail", reason, list(new), list(items), (404, 0.01, 0.0))


def release(lease_id: int) -> Outcome:
    return (lease_id, "release", "", [], [], (0, 0.0, 0.0))


def close(
    lease_id: int, reason: str, items: Iterable[str] = (), new: Iterable[PushEntry] = ()
) -> Outcome:
    return (lease_id, "close", reason, list(new), list(items), INFO_OK)


def item(n: int) -> str:
    return json.dumps({"n": n})


# -- push ----------------------------------------------------------------------------


def test_push_returns_accepted_count_and_drops_duplicates() -> None:
    frontier, _, _ = make()
    a, b = entry("http://a.test/1"), entry("http://a.test/2")
    assert frontier.push([a, b, a]) == 2
    assert frontier.stats["filtered/duplicate"] == 1
    assert frontier.push([b, a]) == 0
    assert frontier.stats["filtered/duplicate"] == 3
    assert frontier.stats["requests/queued"] == 2
    status = frontier.status()
    assert (status["queued"], status["seen"]) == (2, 2)
    assert urls(lease(frontier)) == ["http://a.test/1", "http://a.test/2"]


def test_duplicates_are_dropped_even_after_the_first_copy_was_fetched() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    ((lease_id, _, _),) = lease(frontier, want=1)
    # The fetched page links back to itself: that link must not be queued again.
    frontier.exchange("w1", [ok(lease_id, new=[entry("http://a.test/1")])], 0)
    assert frontier.stats["filtered/duplicate"] == 1
    assert urls(lease(frontier)) == ["http://a.test/2"]


def test_dont_filter_bypasses_dedup_and_does_not_mark_seen() -> None:
    frontier, _, _ = make({"per_host_concurrency": 10})
    url = "http://a.test/x"
    assert frontier.push([entry(url)]) == 1
    assert frontier.push([entry(url, dont_filter=True), entry(url, dont_filter=True)]) == 2
    assert frontier.stats["filtered/duplicate"] == 0
    assert urls(lease(frontier)) == [url, url, url]
    # Scrapy's rule: a dont_filter request is not recorded as seen.
    other = "http://a.test/y"
    assert frontier.push([entry(other, dont_filter=True)]) == 1
    assert frontier.push([entry(other)]) == 1
    assert frontier.push([entry(other)]) == 0
    assert frontier.status()["seen"] == 2


def test_offsite_requests_filtered_and_subdomains_allowed() -> None:
    frontier, _, _ = make(allowed=["Example.com", ".other.org"])
    allowed = [
        "http://example.com/",
        "http://www.example.com/",
        "https://a.b.example.com/x",
        "http://other.org/",
        "http://x.other.org/",
    ]
    offsite = [
        "http://notexample.com/",
        "http://example.com.evil.net/",
        "http://evil.org/",
        "http://com/",
    ]
    assert frontier.push([entry(u) for u in allowed + offsite]) == len(allowed)
    assert frontier.stats["filtered/offsite"] == len(offsite)
    # An offsite URL was never "seen": it costs nothing in the seen-set.
    assert frontier.status()["seen"] == len(allowed)
    assert sorted(urls(lease(frontier))) == sorted(allowed)


@pytest.mark.parametrize(
    ("policy", "key_of"),
    [("domain", lambda url: "example.com"), ("ip", lambda url: "127.0.0.1")],
)
def test_allowed_domains_judge_the_url_host_not_the_politeness_key(
    policy: str, key_of: Callable[[str], str]
) -> None:
    # With domain or ip keys, the key of www.example.com is example.com or an address:
    # allowed_domains must still be checked against each URL's own host.
    frontier, _, _ = make({"politeness_key": policy}, allowed=["www.example.com"])
    wanted, offsite = "http://www.example.com/a", "http://shop.example.com/b"
    pushed = [(FP.fingerprint(u), key_of(u), Request(u).to_wire()) for u in (wanted, offsite)]
    assert frontier.push(pushed) == 1
    assert frontier.stats["filtered/offsite"] == 1
    assert urls(lease(frontier)) == [wanted]


def test_no_allowed_domains_means_every_host_is_allowed() -> None:
    frontier, _, _ = make()
    assert frontier.push([entry("http://a.test/"), entry("http://b.example/")]) == 2
    assert frontier.stats["filtered/offsite"] == 0


def test_depth_limit() -> None:
    frontier, _, _ = make({"depth_limit": 2})
    pushed = [entry(f"http://a.test/{d}", depth=d) for d in (0, 1, 2, 3, 5)]
    assert frontier.push(pushed) == 3
    assert frontier.stats["filtered/depth"] == 2
    # Too deep once is not "seen": the same URL found at a shallower depth is crawled.
    assert frontier.push([entry("http://a.test/3", depth=1)]) == 1
    assert sorted(urls(lease(frontier))) == [f"http://a.test/{n}" for n in (0, 1, 2, 3)]


def test_depth_limit_zero_means_unlimited() -> None:
    frontier, _, _ = make({"depth_limit": 0})
    assert frontier.push([entry("http://a.test/deep", depth=1000)]) == 1
    assert frontier.stats["filtered/depth"] == 0


def test_push_while_closing_is_kept_but_never_leased() -> None:
    # A stopping crawl keeps the links its last pages found, for a resumed crawl.
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1")])
    ((held, _, _),) = lease(frontier)
    frontier.close("cancelled")
    assert not frontier.finished.is_set()  # closing: a lease is still out
    assert frontier.push([entry("http://a.test/2"), entry("http://a.test/1")]) == 1
    assert frontier.stats["filtered/duplicate"] == 1
    assert frontier.status()["queued"] == 1
    leases, _, state = frontier.exchange("w1", [ok(held)], 10)
    assert (leases, state) == ([], "finished")
    assert frontier.finished.is_set()
    assert frontier.status()["queued"] == 1
    # Even a finished crawl keeps what is pushed (a late ack's links), still unleased.
    assert frontier.push([entry("http://a.test/3"), entry("http://a.test/2")]) == 1
    leases, _, state = frontier.exchange("w1", [], 10)
    assert (leases, state) == ([], "finished")
    assert frontier.status()["queued"] == 2


# -- leasing ---------------------------------------------------------------------------


def test_exchange_leases_at_most_want() -> None:
    frontier, _, _ = make({"per_host_concurrency": 100})
    frontier.push([entry(f"http://a.test/{n}") for n in range(10)])
    assert lease(frontier, want=0) == []
    first = lease(frontier, want=3)
    assert urls(first) == [f"http://a.test/{n}" for n in range(3)]
    rest = lease(frontier, want=100)
    assert urls(rest) == [f"http://a.test/{n}" for n in range(3, 10)]
    ids = [lease_id for lease_id, _, _ in first + rest]
    assert len(set(ids)) == 10
    assert {attempt for _, attempt, _ in first + rest} == {0}
    assert lease(frontier) == []
    assert frontier.status()["in_flight"] == 10


def test_priorities_highest_first_within_a_host_fifo_among_equals() -> None:
    frontier, _, _ = make({"per_host_concurrency": 100})
    frontier.push(
        [
            entry("http://a.test/p0", priority=0),
            entry("http://a.test/p5-first", priority=5),
            entry("http://a.test/pm1", priority=-1),
            entry("http://a.test/p5-second", priority=5),
            entry("http://a.test/p10", priority=10),
        ]
    )
    assert urls(lease(frontier)) == [
        "http://a.test/p10",
        "http://a.test/p5-first",
        "http://a.test/p5-second",
        "http://a.test/p0",
        "http://a.test/pm1",
    ]


def test_hosts_are_served_round_robin() -> None:
    frontier, _, _ = make({"per_host_concurrency": 100})
    frontier.push(
        [entry(f"http://a.test/{n}") for n in (1, 2, 3)]
        + [entry(f"http://b.test/{n}") for n in (1, 2, 3)]
        + [entry("http://c.test/1")]
    )
    assert urls(lease(frontier)) == [
        "http://a.test/1",
        "http://b.test/1",
        "http://c.test/1",
        "http://a.test/2",
        "http://b.test/2",
        "http://a.test/3",
        "http://b.test/3",
    ]


def test_per_host_concurrency_caps_leases_across_workers() -> None:
    frontier, _, _ = make({"per_host_concurrency": 2})
    frontier.push([entry(f"http://a.test/{n}") for n in range(5)] + [entry("http://b.test/0")])
    first = lease(frontier, "w1")
    assert urls(first) == ["http://a.test/0", "http://b.test/0", "http://a.test/1"]
    assert lease(frontier, "w2") == []
    assert frontier.status(detail=True)["hosts"]["a.test"]["in_flight"] == 2
    # Acking one a.test lease frees exactly one slot, for whichever worker asks.
    leases, refused, _ = frontier.exchange("w1", [ok(first[0][0])], 0)
    assert (leases, refused) == ([], [])
    assert urls(lease(frontier, "w2")) == ["http://a.test/2"]
    assert lease(frontier, "w1") == []
    assert frontier.status(detail=True)["hosts"]["a.test"]["in_flight"] == 2


def test_delay_spaces_leases_of_one_host() -> None:
    frontier, _, clock = make({"delay_s": 2.0})
    frontier.push([entry(f"http://a.test/{n}") for n in range(3)] + [entry("http://b.test/0")])
    first = lease(frontier)
    assert urls(first) == ["http://a.test/0", "http://b.test/0"]
    frontier.exchange("w1", [ok(first[0][0])], 0)  # a fixed delay: one at a time per host
    clock.advance(1.999)
    assert lease(frontier) == []
    clock.advance(0.001)
    second = lease(frontier)
    assert urls(second) == ["http://a.test/1"]
    frontier.exchange("w1", [ok(second[0][0])], 0)
    clock.advance(1.5)
    assert lease(frontier) == []
    clock.advance(0.5)
    assert urls(lease(frontier)) == ["http://a.test/2"]


def test_delay_counts_from_the_ack_with_one_slot_per_host() -> None:
    frontier, _, clock = make({"delay_s": 1.0, "per_host_concurrency": 1})
    frontier.push([entry("http://a.test/0"), entry("http://a.test/1")])
    (first,) = lease(frontier)
    clock.advance(0.5)
    frontier.exchange("w1", [ok(first[0])], 0)  # acked at t=0.5: next lease from t=1.5
    clock.advance(0.5)
    assert lease(frontier) == []
    clock.advance(0.499)
    assert lease(frontier) == []
    clock.advance(0.001)
    assert urls(lease(frontier)) == ["http://a.test/1"]


def test_delay_counts_from_the_ack_while_the_host_waits_for_its_delay() -> None:
    frontier, _, clock = make({"delay_s": 1.0, "per_host_concurrency": 2})
    frontier.push([entry("http://a.test/0"), entry("http://a.test/1")])
    (first,) = lease(frontier, want=1)
    clock.advance(0.5)
    frontier.exchange("w1", [ok(first[0])], 0)  # acked at t=0.5: next lease from t=1.5
    clock.advance(0.5)
    assert lease(frontier) == []
    clock.advance(0.5)
    assert urls(lease(frontier)) == ["http://a.test/1"]


def test_delay_counts_from_the_ack_while_the_host_is_already_ready() -> None:
    frontier, _, clock = make({"delay_s": 1.0, "per_host_concurrency": 2})
    frontier.push([entry(f"http://{h}.test/{n}") for h in "ab" for n in range(2)])
    first = lease(frontier, "w1", want=2)
    assert urls(first) == ["http://a.test/0", "http://b.test/0"]
    frontier.exchange("w1", [ok(first[0][0])], 0)  # a.test acked at t=0: next from t=1
    clock.advance(1.0)
    # a.test is ready again; b.test is still out (a fixed delay: one at a time per host).
    assert urls(lease(frontier, "w2", want=1)) == ["http://a.test/1"]
    frontier.exchange("w1", [ok(first[1][0])], 0)  # b.test acked at t=1: next from t=2
    clock.advance(0.5)
    assert lease(frontier, "w1") == []
    clock.advance(0.5)
    assert urls(lease(frontier, "w1")) == ["http://b.test/1"]


# -- outcomes --------------------------------------------------------------------------


def test_ok_writes_items_once_and_pushes_new_requests() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    new = [entry("http://a.test/x"), entry("http://b.test/y"), entry("http://a.test/")]
    leases, refused, state = frontier.exchange(
        "w1", [ok(lease_id, items=[item(1), item(2)], new=new)], 0
    )
    assert (leases, refused, state) == ([], [], "running")
    assert sink.calls == [[item(1), item(2)]]
    assert frontier.stats["items"] == 2
    assert frontier.stats["pages"] == 1
    assert frontier.stats["filtered/duplicate"] == 1
    assert frontier.status()["queued"] == 2
    # The same ack again is refused: its items are not written twice.
    leases, refused, _ = frontier.exchange("w1", [ok(lease_id, items=[item(1), item(2)])], 0)
    assert refused == [lease_id]
    assert sink.calls == [[item(1), item(2)]]
    assert frontier.stats["acks/refused"] == 1
    assert frontier.stats["pages"] == 1


def test_ok_with_a_callback_error_reason_is_counted() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [ok(lease_id, items=[item(1)], reason="callback_error")], 0)
    assert frontier.stats["errors/callback_error"] == 1
    assert frontier.stats["pages"] == 1
    assert sink.lines == [item(1)]


def test_ack_for_unknown_or_foreign_lease_is_refused() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier, "w1")
    _, refused, _ = frontier.exchange("w2", [ok(lease_id, items=[item(1)]), ok(999)], 0)
    assert refused == [lease_id, 999]
    assert frontier.stats["acks/refused"] == 2
    assert sink.calls == []
    assert frontier.status()["in_flight"] == 1
    # The lease is still w1's, and w1's ack is the one that counts.
    _, refused, state = frontier.exchange("w1", [ok(lease_id, items=[item(2)])], 0)
    assert (refused, state) == ([], "finished")
    assert sink.calls == [[item(2)]]


def test_retry_requeues_with_backoff_then_dead_letters() -> None:
    # Backoff is 1 s, 2 s, ... with jitter in [0.5, 1.5]: check the jitter's bounds.
    frontier, sink, clock = make({"retry_backoff_s": 1.0, "max_retries": 2})
    url = "http://a.test/flaky"
    frontier.push([entry(url)])
    ((lease_id, attempt, _),) = lease(frontier)
    assert attempt == 0
    frontier.exchange("w1", [retry(lease_id)], 0)
    assert frontier.stats["retries/http_503"] == 1
    assert frontier.status()["queued"] == 1
    clock.advance(0.499)
    assert lease(frontier) == []
    assert frontier.tick() == "running"
    clock.advance(1.001)  # 1.5 s: past the largest jittered first backoff
    ((lease_id, attempt, wire),) = lease(frontier)
    assert (attempt, wire[W_URL]) == (1, url)

    frontier.exchange("w1", [retry(lease_id)], 0)
    clock.advance(0.999)  # second backoff is 2 s, at least 1 s after jitter
    assert lease(frontier) == []
    clock.advance(2.001)
    ((lease_id, attempt, _),) = lease(frontier)
    assert attempt == 2

    _, _, state = frontier.exchange("w1", [retry(lease_id)], 0)
    assert state == "finished"
    assert frontier.dead_letters == [(url, "http_503", 3)]
    assert frontier.stats["retries/http_503"] == 2
    assert frontier.stats["failed/http_503"] == 1
    assert frontier.stats["dead_letters"] == 1
    assert frontier.status(detail=True)["dead_letters"] == [(url, "http_503", 3)]
    assert frontier.status(detail=True)["hosts"]["a.test"]["errors"] == 1
    assert sink.calls == []


def test_retry_honours_retry_after_when_longer_than_backoff() -> None:
    frontier, _, clock = make({"retry_backoff_s": 0.1})
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [retry(lease_id, "http_429", retry_after_s=30.0)], 0)
    clock.advance(29.999)
    assert lease(frontier) == []
    clock.advance(0.001)
    ((_, attempt, _),) = lease(frontier)
    assert attempt == 1
    assert frontier.stats["retries/http_429"] == 1


def test_retry_after_is_capped_by_the_longest_retry_delay() -> None:
    frontier, _, clock = make({"retry_backoff_s": 0.1, "retry_backoff_max_s": 60})
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [retry(lease_id, "http_429", retry_after_s=1e8)], 0)
    clock.advance(59.999)
    assert lease(frontier) == []
    clock.advance(0.001)
    assert [attempt for _, attempt, _ in lease(frontier)] == [1]


def test_jittered_backoff_never_exceeds_the_longest_retry_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    frontier, _, clock = make({"retry_backoff_s": 60, "retry_backoff_max_s": 60})
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [retry(lease_id)], 0)
    clock.advance(59.999)
    assert lease(frontier) == []
    clock.advance(0.001)
    assert [attempt for _, attempt, _ in lease(frontier)] == [1]


def test_retry_after_is_compared_with_the_jittered_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # wait = min(max(backoff * jitter, retry_after), retry_backoff_max_s): with the lowest
    # jitter the backoff is 5 s, so a Retry-After of 8 s (under the plain 10 s) wins.
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    frontier, _, clock = make({"retry_backoff_s": 10, "retry_backoff_max_s": 60})
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [retry(lease_id, "http_429", retry_after_s=8.0)], 0)
    clock.advance(7.999)
    assert lease(frontier) == []
    clock.advance(0.001)
    assert [attempt for _, attempt, _ in lease(frontier)] == [1]


def test_retry_with_zero_max_retries_dead_letters_at_once() -> None:
    frontier, _, _ = make({"max_retries": 0})
    frontier.push([entry("http://a.test/")])
    ((lease_id, _, _),) = lease(frontier)
    _, _, state = frontier.exchange("w1", [retry(lease_id, "timeout")], 0)
    assert state == "finished"
    assert frontier.dead_letters == [("http://a.test/", "timeout", 1)]
    assert "retries/timeout" not in frontier.stats


def test_fail_is_counted_and_not_requeued() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/missing")])
    ((lease_id, _, _),) = lease(frontier)
    _, refused, state = frontier.exchange("w1", [fail(lease_id, "http_404")], 0)
    assert (refused, state) == ([], "finished")
    assert frontier.stats["failed/http_404"] == 1
    assert frontier.dead_letters == []
    assert frontier.status(detail=True)["hosts"]["a.test"] == {
        "queued": 0,
        "in_flight": 0,
        "pages": 0,
        "errors": 1,
        "delay_s": 0.0,
        "failures": 0,
        "paused": False,
    }
    assert sink.calls == []


def test_fail_outcome_keeps_errback_items_and_requests() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/missing")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange(
        "w1", [fail(lease_id, "http_404", items=[item(1)], new=[entry("http://a.test/alt")])], 0
    )
    assert sink.calls == [[item(1)]]
    assert urls(lease(frontier)) == ["http://a.test/alt"]


def test_release_requeues_without_counting_an_attempt() -> None:
    frontier, _, _ = make({"max_retries": 0})
    frontier.push([entry("http://a.test/")])
    ((lease_id, attempt, _),) = lease(frontier, "w1")
    _, refused, state = frontier.exchange("w1", [release(lease_id)], 0)
    assert (refused, state) == ([], "running")
    ((new_id, attempt, wire),) = lease(frontier, "w2")
    assert (attempt, wire[W_URL]) == (0, "http://a.test/")
    assert new_id != lease_id
    # Even with max_retries=0, releasing again and again never dead-letters it.
    for _ in range(3):
        frontier.exchange("w2", [release(new_id)], 0)
        ((new_id, attempt, _),) = lease(frontier, "w2")
        assert attempt == 0
    assert frontier.dead_letters == []
    assert frontier.stats["pages"] == 0
    assert not any(key.startswith(("retries/", "failed/")) for key in frontier.stats)


def test_close_outcome_closes_the_crawl_with_its_reason() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/"), entry("http://b.test/"), entry("http://c.test/")])
    first, second, third = lease(frontier, want=3)
    _, refused, state = frontier.exchange(
        "w1", [close(first[0], "enough", items=[item(1)], new=[entry("http://d.test/")])], 10
    )
    assert (refused, state) == ([], "closing")
    assert frontier.close_reason == "enough"
    assert sink.lines == [item(1)]
    assert frontier.stats["pages"] == 1
    # Closing: new links are kept queued, but nothing more is leased; acks still count.
    assert (frontier.status()["seen"], frontier.status()["queued"]) == (4, 1)
    leases, refused, state = frontier.exchange("w1", [ok(second[0], items=[item(2)])], 10)
    assert (leases, refused, state) == ([], [], "closing")
    _, _, state = frontier.exchange("w1", [ok(third[0], items=[item(3)])], 10)
    assert state == "finished"
    assert frontier.close_reason == "enough"
    assert sink.lines == [item(1), item(2), item(3)]


def test_an_ack_from_before_a_restart_is_refused_by_the_new_frontier() -> None:
    # Lease ids start at a random point, so a new frontier never reuses the old ones.
    before, _, _ = make()
    before.push([entry("http://a.test/")])
    ((old_id, _, _),) = lease(before)
    after, sink, _ = make()
    after.push([entry("http://a.test/")])
    ((new_id, _, _),) = lease(after)
    assert new_id != old_id
    _, refused, _ = after.exchange("w1", [ok(old_id, items=[item(1)])], 0)
    assert refused == [old_id]
    assert sink.calls == []
    _, refused, state = after.exchange("w1", [ok(new_id, items=[item(2)])], 0)
    assert (refused, state) == ([], "finished")
    assert sink.calls == [[item(2)]]


# -- liveness --------------------------------------------------------------------------


def test_silent_worker_leases_go_to_another_worker_and_its_late_ack_is_refused() -> None:
    frontier, sink, clock = make({"worker_timeout_s": 5})
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    old = lease(frontier, "w1")
    assert len(old) == 2
    clock.advance(5.0)  # exactly the timeout: not yet dead
    assert lease(frontier, "w2") == []
    assert frontier.status()["in_flight"] == 2
    clock.advance(0.01)
    new = lease(frontier, "w2")
    assert sorted(urls(new)) == ["http://a.test/1", "http://a.test/2"]
    assert {attempt for _, attempt, _ in new} == {1}  # a reclaim counts as an attempt
    assert frontier.stats["workers/dead"] == 1
    assert frontier.stats["leases/reclaimed"] == 2
    assert frontier.status()["workers"] == 1
    _, refused, _ = frontier.exchange("w1", [ok(i, items=[item(i)]) for i, _, _ in old], 0)
    assert refused == [i for i, _, _ in old]
    assert sink.calls == []
    _, refused, state = frontier.exchange("w2", [ok(i, items=[item(i)]) for i, _, _ in new], 0)
    assert (refused, state) == ([], "finished")
    assert sorted(sink.lines) == sorted(item(i) for i, _, _ in new)


def test_tick_reaps_a_silent_worker() -> None:
    frontier, _, clock = make({"worker_timeout_s": 5})
    frontier.push([entry("http://a.test/1")])
    ((old_id, _, _),) = lease(frontier, "w1")
    clock.advance(6)
    assert frontier.tick() == "running"
    status = frontier.status()
    assert (status["queued"], status["in_flight"], status["workers"]) == (1, 0, 0)
    ((_, attempt, wire),) = lease(frontier, "w2")
    assert (attempt, wire[W_URL]) == (1, "http://a.test/1")
    _, refused, _ = frontier.exchange("w1", [ok(old_id)], 0)
    assert refused == [old_id]


def test_lease_past_its_deadline_is_reclaimed_from_a_live_worker() -> None:
    frontier, sink, clock = make({"lease_timeout_s": 10, "worker_timeout_s": 100})
    frontier.push([entry("http://a.test/1")])
    ((old_id, _, _),) = lease(frontier, "w1")
    clock.advance(9.999)
    assert lease(frontier, "w1") == []  # a heartbeat; the lease is still good
    assert frontier.status()["in_flight"] == 1
    clock.advance(0.001)
    assert lease(frontier, "w1", want=0) == []  # this heartbeat reaps the expired lease
    assert frontier.stats["leases/expired"] == 1
    assert frontier.stats["workers/dead"] == 0
    ((new_id, attempt, _),) = lease(frontier, "w2")
    assert attempt == 1
    _, refused, _ = frontier.exchange("w1", [ok(old_id, items=[item(1)])], 0)
    assert refused == [old_id]
    _, refused, state = frontier.exchange("w2", [ok(new_id, items=[item(2)])], 0)
    assert (refused, state) == ([], "finished")
    assert sink.lines == [item(2)]


def test_reclaim_past_max_retries_dead_letters_as_worker_lost() -> None:
    frontier, _, clock = make({"max_retries": 0, "worker_timeout_s": 1})
    frontier.push([entry("http://a.test/killer")])
    lease(frontier, "w1")
    clock.advance(2)
    assert frontier.tick() == "finished"
    assert frontier.dead_letters == [("http://a.test/killer", "worker_lost", 1)]
    assert frontier.stats["failed/worker_lost"] == 1


def test_forget_worker_requeues_at_once() -> None:
    frontier, sink, _ = make()
    frontier.push([entry("http://a.test/1"), entry("http://b.test/1")])
    old = lease(frontier, "w1")
    lease(frontier, "w2")
    assert frontier.status()["workers"] == 2
    frontier.forget_worker("w1")
    frontier.forget_worker("nobody")  # unknown names are ignored
    assert frontier.status()["workers"] == 1
    new = lease(frontier, "w2")
    assert sorted(urls(new)) == ["http://a.test/1", "http://b.test/1"]
    _, refused, _ = frontier.exchange("w1", [ok(i, items=[item(i)]) for i, _, _ in old], 0)
    assert refused == [i for i, _, _ in old]
    assert sink.calls == []


# -- termination ------------------------------------------------------------------------


def test_finishes_only_when_nothing_is_queued_or_leased() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    ((first, _, _),) = lease(frontier, want=1)
    _, _, state = frontier.exchange("w1", [ok(first)], 0)
    assert state == "running"  # one still queued
    ((second, _, _),) = lease(frontier, want=1)
    assert frontier.tick() == "running"  # one still leased
    assert not frontier.finished.is_set()
    _, _, state = frontier.exchange("w1", [ok(second)], 0)
    assert state == "finished"
    assert frontier.close_reason == "finished"
    assert frontier.tick() == "finished"
    assert frontier.finished.is_set()


def _waiting_exchange(frontier: Frontier, worker: str) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(frontier.exchange(worker, [], 10, wait_s=60))
    )
    waiter.start()
    time.sleep(0.3)
    assert got == []  # holding nothing, nothing queued: it waits in the server
    return waiter, got


def test_an_idle_worker_waits_for_the_links_another_worker_finds() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1")])
    ((first, _, _),) = lease(frontier, "w1")
    waiter, got = _waiting_exchange(frontier, "w2")
    frontier.exchange("w1", [ok(first, new=[entry("http://a.test/2")])], 0)
    waiter.join(30)
    assert not waiter.is_alive()  # woken by the ack, not timed out
    leases, refused, state = got[0]
    assert (urls(leases), refused, state) == (["http://a.test/2"], [], "running")


def test_an_idle_worker_hears_of_the_end_at_once() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1")])
    ((first, _, _),) = lease(frontier, "w1")
    waiter, got = _waiting_exchange(frontier, "w2")
    frontier.exchange("w1", [ok(first)], 0)  # the last page, no links: the crawl is over
    waiter.join(30)
    assert not waiter.is_alive()
    assert got[0] == ([], [], "finished")


def test_the_last_ack_wakes_whoever_waits_for_the_end() -> None:
    # FarmServer.wait sleeps on this between its ticks: the end is acted on at once.
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1")])
    ((only, _, _),) = lease(frontier)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(frontier.finished.wait(60)))
    waiter.start()
    frontier.exchange("w1", [ok(only)], 0)  # on this thread, as a worker's call would be
    waiter.join(60)
    assert woke == [True]


def test_max_pages_hands_out_exactly_n_distinct_requests() -> None:
    frontier, _, _ = make({"max_pages": 3, "per_host_concurrency": 100})
    frontier.push([entry(f"http://a.test/{n}") for n in range(5)])
    first = lease(frontier, want=2)
    assert len(first) == 2
    leases, _, state = frontier.exchange("w2", [], 10)
    assert urls(leases) == ["http://a.test/2"]
    # At the limit but with pages in flight: still running (one may yet be handed back).
    assert state == "running"
    assert lease(frontier, "w3") == []
    _, refused, state = frontier.exchange(
        "w2", [ok(leases[0][0], new=[entry("http://a.test/new")])], 10
    )
    assert (refused, state) == ([], "running")
    _, refused, state = frontier.exchange("w1", [ok(i) for i, _, _ in first], 10)
    assert (refused, state) == ([], "finished")
    assert frontier.stats["pages"] == 3
    assert frontier.close_reason == "max_pages"


def test_max_pages_leases_again_what_a_worker_hands_back_at_the_limit() -> None:
    # A worker that drains (or a lease that is reclaimed) at the limit must not cost pages:
    # the handed-back requests go to another worker and exactly max_pages are crawled.
    frontier, _, _ = make({"max_pages": 4, "per_host_concurrency": 100})
    frontier.push([entry(f"http://a.test/{n}") for n in range(10)])
    held = lease(frontier, "w1", want=10)
    assert urls(held) == [f"http://a.test/{n}" for n in range(4)]
    outcomes = [ok(held[0][0])] + [release(i) for i, _, _ in held[1:]]
    _, _, state = frontier.exchange("w1", outcomes, 0)
    assert state == "running"
    again = lease(frontier, "w2", want=10)
    assert len(again) == 3  # three more pages, whichever are at the head of the queue
    _, _, state = frontier.exchange("w2", [ok(i) for i, _, _ in again], 10)
    assert state == "finished"
    assert frontier.close_reason == "max_pages"
    assert frontier.stats["pages"] == 4


def test_max_pages_does_not_count_retries() -> None:
    frontier, _, clock = make({"max_pages": 2, "retry_backoff_s": 1.0})
    frontier.push([entry("http://a.test/1"), entry("http://b.test/1")])
    ((lease_id, _, _),) = lease(frontier, want=1)
    frontier.exchange("w1", [retry(lease_id)], 0)
    clock.advance(2)
    leases, _, state = frontier.exchange("w1", [], 10)
    assert [(wire[W_URL], attempt) for _, attempt, wire in leases] == [
        ("http://b.test/1", 0),
        ("http://a.test/1", 1),
    ]
    assert state == "running"
    # The next distinct request is the third: it is not handed out, and once the retry is
    # done the crawl closes.
    b_lease, a_lease = leases
    leases, _, state = frontier.exchange("w1", [ok(b_lease[0], new=[entry("http://c.test/1")])], 10)
    assert (leases, state) == ([], "running")
    _, _, state = frontier.exchange("w1", [ok(a_lease[0])], 10)
    assert state == "finished"
    assert frontier.close_reason == "max_pages"
    assert frontier.status()["queued"] == 1


def test_max_pages_does_not_count_a_released_request_twice() -> None:
    # A request handed back unstarted ("release", e.g. a draining worker) is not a page.
    frontier, _, _ = make({"max_pages": 2})
    frontier.push([entry("http://a.test/1"), entry("http://b.test/1")])
    ((lease_id, _, _),) = lease(frontier, "w1", want=1)
    frontier.exchange("w1", [release(lease_id)], 0)
    leases, _, state = frontier.exchange("w2", [], 10)
    assert sorted(urls(leases)) == ["http://a.test/1", "http://b.test/1"]
    assert state == "running"


def test_max_pages_keeps_the_unleased_requests_accounted_for() -> None:
    frontier, _, _ = make({"max_pages": 2, "per_host_concurrency": 100})
    frontier.push([entry(f"http://a.test/{n}") for n in range(5)])
    held = lease(frontier)
    assert len(held) == 2
    frontier.exchange("w1", [ok(i) for i, _, _ in held], 10)
    status = frontier.status(detail=True)
    assert status["state"] == "finished"
    assert status["queued"] == 3
    assert status["hosts"]["a.test"]["queued"] == 3


def test_a_resumed_crawl_counts_the_pages_its_earlier_run_finished_against_max_pages() -> None:
    frontier, _, _ = make({"max_pages": 5, "per_host_concurrency": 100})
    queued = [(rid, "a.test", entry(f"http://a.test/{rid}")[2], 0) for rid in range(10, 15)]
    frontier.restore([], queued, {"pages": 3, "failed/http_404": 1}, [])
    leases = lease(frontier, want=10)
    assert urls(leases) == ["http://a.test/10"]  # 3 pages + 1 failure before: one left
    _, _, state = frontier.exchange("w1", [ok(leases[0][0])], 10)
    assert (state, frontier.close_reason) == ("finished", "max_pages")
    assert frontier.stats["pages"] == 4


def test_max_items_writes_exactly_n_items() -> None:
    frontier, sink, _ = make({"max_items": 5})
    frontier.push([entry(f"http://a.test/{n}") for n in range(4)])
    a, b, c, d = lease(frontier)
    _, _, state = frontier.exchange("w1", [ok(a[0], items=[item(n) for n in range(3)])], 0)
    assert state == "running"
    _, _, state = frontier.exchange("w1", [ok(b[0], items=[item(n) for n in range(3, 7)])], 0)
    assert state == "closing"
    assert frontier.close_reason == "max_items"
    assert sink.lines == [item(n) for n in range(5)]
    assert frontier.stats["items/over_limit"] == 2
    _, _, state = frontier.exchange(
        "w1", [ok(c[0], items=[item(7), item(8)]), ok(d[0], items=[item(9)])], 0
    )
    assert state == "finished"
    assert sink.lines == [item(n) for n in range(5)]
    assert frontier.stats["items"] == 5
    assert frontier.stats["items/over_limit"] == 5


def test_max_items_reached_exactly_closes() -> None:
    frontier, sink, _ = make({"max_items": 2})
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    (a, b) = lease(frontier)
    _, _, state = frontier.exchange("w1", [ok(a[0], items=[item(1), item(2)])], 0)
    assert state == "closing"
    assert frontier.stats["items/over_limit"] == 0
    frontier.exchange("w1", [ok(b[0])], 0)
    assert frontier.state == "finished"
    assert sink.lines == [item(1), item(2)]


def test_max_seconds_closes_the_crawl() -> None:
    frontier, _, clock = make({"max_seconds": 60, "worker_timeout_s": 3600})
    frontier.push([entry(f"http://a.test/{n}") for n in range(3)])
    ((held, _, _),) = lease(frontier, want=1)
    clock.advance(59.999)
    assert frontier.tick() == "running"
    clock.advance(0.001)
    assert frontier.tick() == "closing"
    assert frontier.close_reason == "max_seconds"
    leases, _, state = frontier.exchange("w1", [ok(held)], 10)
    assert (leases, state) == ([], "finished")
    assert frontier.status()["elapsed_s"] == 60.0


def test_max_seconds_hands_out_nothing_after_the_deadline() -> None:
    frontier, _, clock = make({"max_seconds": 60})
    frontier.push([entry(f"http://a.test/{n}") for n in range(3)])
    clock.advance(60)
    leases, _, state = frontier.exchange("w1", [], 10)
    assert (leases, state) == ([], "finished")


def test_close_drains_leases_then_finishes() -> None:
    frontier, sink, _ = make({"retry_backoff_s": 0.0})
    frontier.push([entry(f"http://a.test/{n}") for n in range(4)])
    a, b, c = lease(frontier, want=3)
    frontier.close("user_stop")
    frontier.close("second_reason")  # the first reason sticks
    assert frontier.state == "closing"
    assert frontier.close_reason == "user_stop"
    leases, refused, state = frontier.exchange(
        "w1", [ok(a[0], items=[item(1)], new=[entry("http://a.test/new")])], 10
    )
    assert (leases, refused, state) == ([], [], "closing")
    assert sink.lines == [item(1)]
    _, _, state = frontier.exchange("w1", [retry(b[0]), release(c[0])], 10)
    assert state == "finished"
    assert frontier.close_reason == "user_stop"
    # A stopped crawl keeps its unfinished requests and its last pages' links queued
    # (a.test/3, the retried, the released and a.test/new), for a resumable job dir.
    assert frontier.status()["queued"] == 4
    assert frontier.stats["pages"] == 1
    assert "requests/abandoned" not in frontier.stats


def test_close_with_nothing_leased_finishes_at_once() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/")])
    frontier.close("shutdown")
    assert frontier.state == "finished"
    assert frontier.close_reason == "shutdown"


def test_status_fields() -> None:
    frontier, _, clock = make({"per_host_concurrency": 100})
    frontier.push(
        [entry(f"http://a.test/{n}") for n in range(3)]
        + [entry("http://b.test/0"), entry("http://b.test/0")]
    )
    (a0, b0) = lease(frontier, "w1", want=2)
    lease(frontier, "w2", want=0)  # w2 says hello: a live worker holding nothing
    frontier.exchange("w1", [ok(a0[0], items=[item(1)])], 0)
    clock.advance(5)
    status = frontier.status(detail=True)
    assert status == {
        "state": "running",
        "close_reason": "",
        "queued": 2,
        "in_flight": 1,
        "seen": 4,
        "workers": 2,
        "elapsed_s": 5.0,
        "stats": {"requests/queued": 4, "filtered/duplicate": 1, "pages": 1, "items": 1},
        "spider_stats": {},
        "paused": False,
        "paused_hosts": [],
        "dead_letters": [],
        "hosts": {
            "a.test": {
                "queued": 2,
                "in_flight": 0,
                "pages": 1,
                "errors": 0,
                "delay_s": 0.0,
                "failures": 0,
                "paused": False,
            },
            "b.test": {
                "queued": 0,
                "in_flight": 1,
                "pages": 0,
                "errors": 0,
                "delay_s": 0.0,
                "failures": 0,
                "paused": False,
            },
        },
        "worker_detail": {
            "w1": {
                "alive": True,
                "leases": 1,
                "pages": 1,
                "draining": False,
                "last_seen_s": 5.0,
                "loop_lag_s": 0.0,
            },
            "w2": {
                "alive": True,
                "leases": 0,
                "pages": 0,
                "draining": False,
                "last_seen_s": 5.0,
                "loop_lag_s": 0.0,
            },
        },
    }
    assert b0[2][W_URL] == "http://b.test/0"
    # A snapshot: changing it does not change the frontier.
    status["stats"]["pages"] = 99
    assert frontier.stats["pages"] == 1


def test_a_heartbeat_keeps_a_busy_worker_alive_and_reports_its_lag() -> None:
    frontier, _, clock = make({"worker_timeout_s": 10})
    frontier.push([entry("http://a.test/0")])
    lease(frontier, "w1", want=1)
    clock.advance(8)
    frontier.heartbeat("w1", 7.5)  # its loop is stuck in a callback; its thread is not
    clock.advance(8)
    assert frontier.tick() == "running"
    assert frontier.status()["in_flight"] == 1  # not reclaimed: the worker is alive
    assert frontier.status(detail=True)["worker_detail"]["w1"]["loop_lag_s"] == 7.5
    frontier.heartbeat("nobody", 0.0)  # an unknown worker is not made up
    assert "nobody" not in frontier.status(detail=True)["worker_detail"]
    clock.advance(11)
    frontier.tick()
    assert frontier.status()["in_flight"] == 0  # silent past worker_timeout_s: reclaimed


# -- threads ----------------------------------------------------------------------------


def test_concurrent_push_exchange_ack_acks_every_request_exactly_once() -> None:
    n_threads, total = 4, 20_000
    frontier, sink, _ = make(
        {"per_host_concurrency": 10_000, "worker_timeout_s": 3600}, clock=Clock()
    )
    # A held guard lease keeps the crawl from finishing before every thread has pushed.
    frontier.push([entry("http://guard.test/")])
    ((guard, _, _),) = lease(frontier, "main")
    urls_by_thread = [
        [f"http://h{n % 17}.test/{n}" for n in range(t, total, n_threads)] for t in range(n_threads)
    ]
    pushed_all = threading.Barrier(n_threads + 1)
    acked: list[Counter[str]] = [Counter() for _ in range(n_threads)]
    refused_total: list[int] = [0] * n_threads
    errors: list[BaseException] = []
    stop = threading.Event()  # set on failure, so no thread spins forever

    def work(t: int) -> None:
        try:
            mine = urls_by_thread[t]
            other = urls_by_thread[(t + 1) % n_threads]
            outcomes: list[Outcome] = []
            pos, barrier_passed = 0, False
            while not stop.is_set():
                if pos < len(mine):
                    # Push our share in slices, with duplicates of another thread's URLs.
                    batch = [entry(u) for u in mine[pos : pos + 250]]
                    batch += [entry(u) for u in other[pos : pos + 50]]
                    frontier.push(batch)
                    pos += 250
                elif not barrier_passed:
                    pushed_all.wait(timeout=30)
                    barrier_passed = True
                leases, refused, state = frontier.exchange(f"t{t}", outcomes, 64)
                refused_total[t] += len(refused)
                outcomes = []
                for lease_id, _, wire in leases:
                    acked[t][wire[W_URL]] += 1
                    outcomes.append(ok(lease_id, items=[json.dumps({"url": wire[W_URL]})]))
                if state == "finished" and not outcomes:
                    return
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()
            pushed_all.abort()

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    try:
        pushed_all.wait(timeout=30)
        frontier.exchange("main", [ok(guard)], 0)
        for thread in threads:
            thread.join(timeout=60)
    except threading.BrokenBarrierError:
        pass
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)

    every = sum(acked, Counter())
    expected = {f"http://h{n % 17}.test/{n}" for n in range(total)}
    assert set(every) == expected
    assert set(every.values()) == {1}
    assert refused_total == [0] * n_threads
    written = Counter(json.loads(line)["url"] for line in sink.lines)
    assert set(written) == expected
    assert set(written.values()) == {1}
    assert frontier.stats["pages"] == total + 1
    assert frontier.stats["items"] == total
    assert frontier.stats["filtered/duplicate"] == total // 250 * 50
    status = frontier.status()
    assert (status["state"], status["queued"], status["in_flight"]) == ("finished", 0, 0)


# -- owed work and the limits (found in review: each lost pages or hung the crawl) ----------


def test_max_pages_crawls_the_pages_of_a_dead_worker_before_closing() -> None:
    frontier, _, clock = make({"max_pages": 2, "per_host_concurrency": 8})
    frontier.push([entry(f"http://a.test/{n}") for n in (1, 2, 3)])
    assert urls(lease(frontier, "w1", want=10)) == ["http://a.test/1", "http://a.test/2"]
    clock.advance(11)  # w1 silent past worker_timeout_s: dead, its leases reclaimed
    assert frontier.tick() == "running"
    again = lease(frontier, "w2", want=10)
    assert sorted((wire[W_URL], attempt) for _, attempt, wire in again) == [
        ("http://a.test/1", 1),
        ("http://a.test/2", 1),
    ]
    _, _, state = frontier.exchange("w2", [ok(i) for i, _, _ in again], 10)
    assert (state, frontier.close_reason, frontier.stats["pages"]) == ("finished", "max_pages", 2)
    assert frontier.status()["queued"] == 1  # a.test/3: never a page


def test_max_pages_waits_for_a_retry_while_its_host_is_backed_off() -> None:
    # 503 backs the host off for 1 s; the retry (backoff 0.25-0.75 s) becomes due first and
    # waits in the host's queue: the crawl must not close over it.
    frontier, _, clock = make({"max_pages": 1, "autothrottle": True})
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    ((lease_id, _, _),) = lease(frontier, want=10)
    frontier.exchange("w1", [retry(lease_id, "http_503")], 10)
    clock.advance(0.8)
    leases, _, state = frontier.exchange("w1", [], 10)
    assert (leases, state) == ([], "running")
    clock.advance(0.3)
    ((lease_id, attempt, wire),) = lease(frontier, want=10)
    assert (wire[W_URL], attempt) == ("http://a.test/1", 1)
    _, _, state = frontier.exchange("w1", [ok(lease_id)], 10)
    assert (state, frontier.stats["pages"]) == ("finished", 1)


def test_owed_work_goes_before_new_requests_of_its_host() -> None:
    frontier, _, clock = make({"per_host_concurrency": 1})
    frontier.push([entry(f"http://a.test/{n}") for n in (1, 2, 3)])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [fail(lease_id, "disconnected")], 0)  # not retried: a fail
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [retry(lease_id, "timeout")], 0)
    clock.advance(60)
    assert [(wire[W_URL], attempt) for _, attempt, wire in lease(frontier)] == [
        ("http://a.test/2", 1)
    ]


def robots_frontier(settings: Mapping[str, Any]) -> tuple[Frontier, Clock]:
    clock = Clock()
    merged = Settings.merge({"autothrottle": False, "randomize_delay": False}, settings)
    return Frontier(merged, write_items=Sink(), clock=clock), clock


def test_handing_back_a_robots_lease_does_not_free_a_page_under_max_pages() -> None:
    frontier, _ = robots_frontier({"max_pages": 1})
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2"), entry("http://b.test/1")])
    by_url = {wire[W_URL]: lease_id for lease_id, _, wire in lease(frontier, want=10)}
    assert sorted(by_url) == ["http://a.test/robots.txt", "http://b.test/robots.txt"]
    frontier.exchange("w1", [release(by_url["http://b.test/robots.txt"])], 0)
    missing = (by_url["http://a.test/robots.txt"], "robots", "missing", [], [], (404, 0.01, 0.0))
    frontier.exchange("w1", [missing], 0)
    pages = [u for u in urls(lease(frontier, want=10)) if not u.endswith("/robots.txt")]
    assert pages == ["http://a.test/1"]


def test_a_robots_fetch_that_fails_any_other_way_settles_its_origin() -> None:
    # A middleware raising on robots.txt reaches the frontier as a plain failure: the
    # origin must count it as unavailable (retry, then give up), never wait forever.
    frontier, clock = robots_frontier({"max_retries": 1})
    frontier.push([entry("http://a.test/1")])
    for attempt in range(2):
        ((lease_id, got, wire),) = lease(frontier)
        assert (wire[W_URL], got) == ("http://a.test/robots.txt", attempt)
        frontier.exchange("w1", [fail(lease_id, "internal_error")], 0)
        clock.advance(120)
    leases, _, state = frontier.exchange("w1", [], 10)
    assert (leases, state) == ([], "finished")
    assert frontier.stats["robots/unavailable"] == 2
    assert frontier.stats["filtered/robots_unavailable"] == 1
    assert frontier.stats["acks/bad_kind"] == 2


def test_a_page_lease_reported_as_robots_fails_that_page_only() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    first, second = lease(frontier)
    confused = (first[0], "robots", "ok", [], ["User-agent: *"], (200, 0.01, 0.0))
    _, refused, state = frontier.exchange("w1", [confused, ok(second[0])], 0)
    assert (refused, state) == ([], "finished")
    assert frontier.stats["failed/bad_outcome"] == 1
    assert frontier.stats["pages"] == 1


def test_a_resumed_job_that_reached_max_items_closes_at_once() -> None:
    frontier, sink, _ = make({"max_items": 2})
    queued = [(rid, "a.test", entry(f"http://a.test/{rid}")[2], 0) for rid in range(1, 6)]
    frontier.restore([], queued, {"pages": 2, "items": 2}, [])
    leases, _, state = frontier.exchange("w1", [], 10)
    assert (leases, state, frontier.close_reason) == ([], "finished", "max_items")
    assert sink.lines == []


def test_an_outcome_that_got_no_answer_does_not_undo_a_backoff() -> None:
    # Without autothrottle a 429 backs the host off until its next ordinary answer; a
    # request a middleware skipped, or one that failed before reaching the host, is none.
    frontier, _, _ = make({"per_host_concurrency": 8})
    frontier.push([entry(f"http://a.test/{n}") for n in range(4)])
    a, b, c, d = lease(frontier)
    frontier.exchange("w1", [retry(a[0], "http_429")], 0)
    skipped = (b[0], "skip", "requests/ignored", [], [], (0, 0.0, 0.0))
    unanswered = (c[0], "fail", "internal_error", [], [], (0, 0.0, 0.0))
    frontier.exchange("w1", [skipped, unanswered], 0)
    assert frontier.status(detail=True)["hosts"]["a.test"]["delay_s"] == 1.0
    frontier.exchange("w1", [ok(d[0])], 0)  # an ordinary answer: the backoff ends
    assert frontier.status(detail=True)["hosts"]["a.test"]["delay_s"] == 0.0


def test_worker_notes_count_with_a_multiplier() -> None:
    frontier, _, _ = make()
    frontier.push([entry("http://a.test/1")])
    ((lease_id, _, _),) = lease(frontier)
    frontier.exchange("w1", [ok(lease_id, reason="items/dropped*20,callback_error,bad_item*x")], 0)
    assert frontier.stats["items/dropped"] == 20
    assert frontier.stats["errors/callback_error"] == 1
    assert frontier.stats["errors/bad_item"] == 1


def test_a_feed_that_cannot_be_written_closes_the_crawl_without_losing_the_ack() -> None:
    def disk_full(lines: list[str]) -> None:
        raise OSError(28, "No space left on device")

    frontier = Frontier(Settings.merge({"obey_robots": False}), write_items=disk_full)
    frontier.push([entry("http://a.test/1"), entry("http://a.test/2")])
    first, second = lease(frontier)
    _, refused, state = frontier.exchange("w1", [ok(first[0], items=[item(1)])], 0)
    assert (refused, state, frontier.close_reason) == ([], "closing", "feed_error")
    _, _, state = frontier.exchange("w1", [ok(second[0])], 0)
    assert state == "finished"
    assert (frontier.stats["pages"], frontier.stats["items/write_errors"]) == (1, 1)
    assert frontier.status()["queued"] == 1  # a.test/1 is not done: a resumed job fetches it


# -- pausing (the console's actions) --------------------------------------------------------


def test_pause_farm_wide_leases_nothing_until_resumed() -> None:
    frontier, _, _ = make()
    frontier.push([entry(f"http://a.test/{i}") for i in range(3)])
    frontier.pause()
    assert frontier.exchange("w1", [], 10)[0] == []
    assert frontier.status()["paused"] is True
    assert frontier.tick() == "running"  # queued work keeps a paused crawl open
    frontier.resume()
    assert len(frontier.exchange("w1", [], 10)[0]) == 3
    assert frontier.status()["paused"] is False


def test_pause_one_host_leases_the_others_only() -> None:
    frontier, _, _ = make()
    frontier.push([entry(f"http://{h}.test/{i}") for h in "ab" for i in range(2)])
    frontier.pause("a.test")
    leases, _, _ = frontier.exchange("w1", [], 10)
    assert sorted(w[0] for _, _, w in leases) == ["http://b.test/0", "http://b.test/1"]
    status = frontier.status(detail=True)
    assert status["paused_hosts"] == ["a.test"]
    assert (status["hosts"]["a.test"]["paused"], status["hosts"]["b.test"]["paused"]) == (
        True, False,
    )  # fmt: skip
    assert status["hosts"]["a.test"]["queued"] == 2
    assert frontier.exchange("w1", [], 10)[0] == []
    frontier.resume("a.test")
    leases, _, _ = frontier.exchange("w1", [], 10)
    assert sorted(w[0] for _, _, w in leases) == ["http://a.test/0", "http://a.test/1"]


def test_a_host_paused_before_it_is_known_is_paused_when_it_comes() -> None:
    frontier, _, _ = make()
    frontier.pause("late.test")
    frontier.push([entry("http://late.test/x")])
    assert frontier.exchange("w1", [], 10)[0] == []
    frontier.resume("late.test")
    assert len(frontier.exchange("w1", [], 10)[0]) == 1


# -- spider stats (spider.stats) ------------------------------------------------------------


def test_spider_stats_merge_from_notes_of_two_workers() -> None:
    from spiderfarm.protocol import stat_note

    frontier, _, _ = make()
    frontier.push([entry(f"http://a.test/{i}") for i in range(2)])
    (one,), _, _ = frontier.exchange("w1", [], 1)
    (two,), _, _ = frontier.exchange("w2", [], 1)
    notes1 = ",".join([
        "callback_error", stat_note("+", "seen", 3), stat_note(">", "top", 7),
        stat_note("<", "low", 2.5), stat_note("=", "last", 1), stat_note("~", "from10", 10),
        stat_note("+", "from10", 1),
    ])  # fmt: skip
    notes2 = ",".join([
        stat_note("+", "seen", 4), stat_note(">", "top", 5), stat_note("<", "low", 0.5),
        stat_note("=", "last", 9), stat_note("~", "from10", 10), stat_note("+", "from10", 1),
        stat_note("+", "a,b|c*d%e:f", 1),
    ])  # fmt: skip
    frontier.exchange("w1", [ok(one[0], reason=notes1)], 0)
    frontier.exchange("w2", [(two[0], "fail", f"http_404|{notes2}", [], [], (404, 0.1, 0.0))], 0)
    status = frontier.status()
    assert status["spider_stats"] == {
        "seen": 7, "top": 7, "low": 0.5, "last": 9, "from10": 12, "a,b|c*d%e:f": 1,
    }  # fmt: skip
    assert status["stats"]["errors/callback_error"] == 1
    assert status["stats"]["failed/http_404"] == 1
    assert not any(k.startswith("errors/$") for k in status["stats"])


def test_spider_stats_keys_are_capped() -> None:
    from spiderfarm.protocol import MAX_SPIDER_STATS, stat_note

    frontier, _, _ = make()
    for i in range(MAX_SPIDER_STATS + 5):
        frontier.note_spider_stats(stat_note("+", f"k{i}", 1))
    frontier.note_spider_stats(stat_note("+", "k0", 1))  # a known key still counts
    status = frontier.status()
    assert len(status["spider_stats"]) == MAX_SPIDER_STATS
    assert status["spider_stats"]["k0"] == 2
    assert status["stats"]["errors/spider_stats_dropped"] == 5
