"""Tests for spiderfarm.feeds: the item feed formats chosen by extension, and errors."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from spiderfarm.errors import FeedError
from spiderfarm.feeds import FEED_FORMATS, open_feed

ITEMS = [
    {"title": "A", "price": 1.5, "tags": ["x", "y"]},
    {"title": 'B, "quoted"', "price": 2, "tags": []},
]
LINES = [json.dumps(item) for item in ITEMS]


@pytest.mark.parametrize("suffix", [".jsonl", ".jl", ".JSONL"])
def test_jsonl_feed_writes_the_lines_as_given(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"items{suffix}"
    feed = open_feed(path)
    feed.write(LINES[:1])
    feed.write(LINES[1:])
    assert feed.count == 2
    feed.close()
    assert feed.path == path
    assert path.read_text(encoding="utf-8") == LINES[0] + "\n" + LINES[1] + "\n"


def test_offset_is_the_byte_position_after_the_last_item(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    feed = open_feed(path)
    assert feed.offset() == 0
    line = json.dumps({"name": "café"}, ensure_ascii=False)
    feed.write([line])
    # Bytes, not characters; and flushed, so the file already holds them.
    size = len(line.encode("utf-8")) + 1
    assert feed.offset() == size
    assert path.stat().st_size == size
    feed.close()


def test_jsonl_feed_appends_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    first = open_feed(path)
    first.write(LINES[:1])
    end = first.offset()
    first.close()
    second = open_feed(str(path), resume_at=end)
    assert second.offset() == end
    second.write(LINES[1:])
    second.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == ITEMS


@pytest.mark.parametrize("suffix", [".jsonl", ".jl"])
def test_resume_cuts_the_feed_back_to_the_journaled_offset(tmp_path: Path, suffix: str) -> None:
    # Items written after the last journal checkpoint are written again by the resumed
    # crawl: the feed drops them first, so that no item appears twice.
    path = tmp_path / f"items{suffix}"
    first = open_feed(path)
    first.write(LINES[:1])
    end = first.offset()
    first.write(LINES[1:])
    first.close()
    second = open_feed(path, resume_at=end)
    assert path.read_text(encoding="utf-8") == LINES[0] + "\n"
    assert second.offset() == end
    second.write(LINES[1:])
    second.close()
    assert path.read_text(encoding="utf-8") == LINES[0] + "\n" + LINES[1] + "\n"


def test_resume_at_zero_empties_the_feed(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(LINES[0] + "\n")
    feed = open_feed(path, resume_at=0)
    assert feed.offset() == 0
    feed.close()
    assert path.read_text() == ""


def test_resume_of_a_feed_shorter_than_the_offset_warns_and_appends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(LINES[0] + "\n")
    size = path.stat().st_size
    with caplog.at_level(logging.WARNING, logger="spiderfarm.feeds"):
        feed = open_feed(path, resume_at=size + 100)
    assert [r.getMessage() for r in caplog.records] == [
        f"feed {path} is shorter than the job journal recorded ({size} < {size + 100} bytes): "
        "items of the earlier run are missing from it"
    ]
    feed.write(LINES[1:])
    feed.close()
    assert path.read_text(encoding="utf-8") == LINES[0] + "\n" + LINES[1] + "\n"


def test_resume_of_a_missing_feed_creates_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "items.jsonl"
    with caplog.at_level(logging.WARNING, logger="spiderfarm.feeds"):
        feed = open_feed(path, resume_at=0)
    assert caplog.records == []
    feed.write(LINES[:1])
    feed.close()
    assert path.read_text(encoding="utf-8") == LINES[0] + "\n"


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_only_jsonl_feeds_can_be_resumed(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"items{suffix}"
    with pytest.raises(FeedError) as info:
        open_feed(path, resume_at=0)
    assert str(info.value) == (
        f"feed {str(path)!r}: a resumed crawl (--job-dir) needs a .jsonl feed, which it "
        "can append to; convert to JSON or CSV afterwards"
    )
    assert not path.exists()


def test_json_feed_is_a_valid_array_after_close(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    feed = open_feed(path)
    feed.write(LINES[:1])
    feed.write(LINES[1:])
    feed.close()
    assert feed.count == 2
    assert json.loads(path.read_text(encoding="utf-8")) == ITEMS


def test_json_feed_without_items_is_an_empty_array(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    feed = open_feed(path)
    feed.close()
    assert path.read_text() == "[]\n"
    assert json.loads(path.read_text()) == []


def test_json_feed_keeps_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    feed = open_feed(path)
    feed.write([json.dumps({"name": "café"}, ensure_ascii=False)])
    feed.close()
    assert json.loads(path.read_text(encoding="utf-8")) == [{"name": "café"}]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_an_empty_batch_writes_nothing(tmp_path: Path, suffix: str) -> None:
    with_empty, without = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    for path, batches in (
        (with_empty, [[], LINES[:1], [], LINES[1:], []]),
        (without, [LINES[:1], LINES[1:]]),
    ):
        feed = open_feed(path)
        for batch in batches:
            feed.write(batch)
        assert feed.count == 2
        feed.close()
    assert with_empty.read_text() == without.read_text()


@pytest.mark.parametrize(("suffix", "text"), [(".json", "[]\n"), (".jsonl", ""), (".csv", "")])
def test_only_empty_batches_leave_an_empty_feed(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"items{suffix}"
    feed = open_feed(path)
    feed.write([])
    assert feed.count == 0
    feed.close()
    assert path.read_text() == text


def test_csv_feed_takes_its_header_from_the_first_item(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    feed = open_feed(path)
    feed.write(LINES)
    feed.close()
    assert feed.count == 2
    assert path.read_text(encoding="utf-8").splitlines(keepends=True) == [
        "title,price,tags\n",
        'A,1.5,"[""x"", ""y""]"\n',
        '"B, ""quoted""",2,[]\n',
    ]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {"title": "A", "price": "1.5", "tags": '["x", "y"]'},
        {"title": 'B, "quoted"', "price": "2", "tags": "[]"},
    ]


def test_csv_feed_json_encodes_nested_values_and_leaves_none_empty(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    feed = open_feed(path)
    feed.write([json.dumps({"a": {"k": [1, None]}, "b": None})])
    feed.close()
    with path.open(newline="") as fh:
        assert list(csv.reader(fh)) == [["a", "b"], ['{"k": [1, null]}', ""]]


def test_csv_feed_drops_keys_outside_the_first_items_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "items.csv"
    feed = open_feed(path)
    with caplog.at_level(logging.WARNING, logger="spiderfarm.feeds"):
        feed.write([json.dumps({"a": 1, "b": 2})])
        feed.write([json.dumps({"b": 3, "extra": "x"}), json.dumps({"a": 4, "more": True})])
    feed.close()
    assert feed.count == 3
    assert path.read_text() == "a,b\n1,2\n,3\n4,\n"
    assert [r.getMessage() for r in caplog.records] == [
        f"CSV feed {path}: columns come from the first item; dropping fields ['extra']"
    ]


def test_csv_feed_without_items_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    open_feed(path).close()
    assert path.read_text() == ""


def test_unknown_extension_lists_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "items.xml"
    with pytest.raises(FeedError) as info:
        open_feed(path)
    assert str(info.value) == (
        f"cannot tell the feed format of {str(path)!r}: use one of .csv, .jl, .json, .jsonl"
    )
    assert sorted(FEED_FORMATS) == [".csv", ".jl", ".json", ".jsonl"]
    assert not path.exists()


def test_a_path_under_a_file_is_unwritable(tmp_path: Path) -> None:
    parent = tmp_path / "not_a_dir"
    parent.write_text("")
    path = parent / "items.jsonl"
    with pytest.raises(FeedError) as info:
        open_feed(path)
    assert str(info.value) == (
        f"cannot write the feed {str(path)!r}: Not a directory; choose a writable path with -o"
    )


def test_a_path_in_a_missing_directory_is_unwritable(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "items.json"
    with pytest.raises(FeedError) as info:
        open_feed(path)
    assert str(info.value) == (
        f"cannot write the feed {str(path)!r}: No such file or directory; "
        "choose a writable path with -o"
    )


def test_csv_feed_skips_a_line_that_is_not_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    feed = open_feed(path)
    feed.write(['{"a": 1}', "not json", "[1, 2]", '{"a": 2}'])
    feed.close()
    assert path.read_text() == "a\n1\n2\n"
