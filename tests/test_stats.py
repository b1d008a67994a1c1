"""spider.stats (spiderfarm/stats.py) and the notes that carry it (protocol.py)."""

from __future__ import annotations

import pytest

from spiderfarm import Spider
from spiderfarm.protocol import (
    MAX_BATCH,
    MAX_ITEM_BYTES,
    MAX_LINKS_PER_PAGE,
    MAX_NOTES_CHARS,
    check_exchange,
    read_notes,
    read_stat_notes,
)
from spiderfarm.stats import SpiderStats


def check(reason: str, kind: str = "ok") -> None:
    outcome = (1, kind, reason, [], [], (200, 0.1, 0.0))
    check_exchange(
        "w1", [outcome], 0, max_batch=MAX_BATCH, max_item_bytes=MAX_ITEM_BYTES,
        max_links=MAX_LINKS_PER_PAGE,
    )  # fmt: skip


def test_scrapy_names_and_the_local_view() -> None:
    stats = SpiderStats()
    stats.inc_value("n")
    stats.inc_value("n", 4)
    stats.inc_value("s", 1, start=10)
    stats.max_value("hi", 3)
    stats.max_value("hi", 2)
    stats.min_value("lo", 3)
    stats.min_value("lo", 1.5)
    stats.set_value("x", 1)
    stats.set("x", 2)
    assert stats.get_stats() == {"n": 5, "s": 11, "hi": 3, "lo": 1.5, "x": 2}
    assert stats.get_value("missing", 0) == 0 and stats.get("n") == 5
    notes = stats.take_notes()
    assert stats.pending == {}
    assert sorted(read_stat_notes(notes)) == sorted([
        ("+", "n", 5), ("~", "s", 10), ("+", "s", 1), (">", "hi", 3), ("<", "lo", 1.5),
        ("=", "x", 2),
    ])  # fmt: skip
    assert list(read_notes(notes)) == []  # not counters


def test_bad_keys_and_values_say_what_is_wrong() -> None:
    stats = SpiderStats()
    with pytest.raises(ValueError, match="spider stat key"):
        stats.inc_value("k" * 201)
    with pytest.raises(TypeError, match="must be a finite int or float"):
        stats.set_value("when", "yesterday")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="finite"):
        stats.max_value("m", float("nan"))
    assert stats.pending == {}


def test_notes_past_the_budget_wait_for_the_next_outcome() -> None:
    stats = SpiderStats()
    for i in range(500):
        stats.inc_value(f"key-{i:03}-" + "x" * 40)
    first = stats.take_notes()
    assert len(first) <= 3000 and stats.pending
    rest = stats.take_notes()
    assert len(first) + len(rest) > 3000
    keys = [k for _, k, _ in read_stat_notes(first)] + [k for _, k, _ in read_stat_notes(rest)]
    while stats.pending:
        keys += [k for _, k, _ in read_stat_notes(stats.take_notes())]
    assert len(keys) == len(set(keys)) == 500


def test_the_server_caps_what_a_worker_sends() -> None:
    check("$+k:1," * 100)  # notes over 200 characters: fine
    check("http_404|" + "$+k:1," * 100, kind="fail")
    with pytest.raises(ValueError, match="short string"):
        check("x" * (MAX_NOTES_CHARS + 1))
    with pytest.raises(ValueError, match="short string"):
        check("x" * 201, kind="close")
    with pytest.raises(ValueError, match="short string"):
        check("x" * 201, kind="fail")  # a failure code is journaled: it stays short


def test_a_spider_has_stats_and_keeps_them_its_own() -> None:
    class S(Spider):
        name = "s"

    spider = S()
    assert spider.stats is spider.stats
    spider.stats.inc_value("a")
    from spiderfarm.start import spider_state

    assert "_stats" not in spider_state(spider)
