"""Item feeds: formats, -o (append) and -O (overwrite), FILE:FORMAT, standard output, gzip,
feed_fields, several feeds at once and their resume from a job dir.

The first half opens feeds in this process; the second runs the real CLI against the
static quotes site (100 quotes and 50 authors: 150 items) and the demo catalogue.
"""

from __future__ import annotations

import base64
import csv
import errno
import gzip
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spiderfarm import exporters
from spiderfarm.demosite import Catalogue
from spiderfarm.errors import FeedError, SettingsError
from spiderfarm.feeds import FEED_FORMATS, FeedSpec, open_feed, open_feeds
from spiderfarm.journal import Journal
from spiderfarm.server import FarmServer, ServerConfig
from spiderfarm.settings import Settings
from tests.farm import ServerProcess, run_cli, start_worker, wait_all, write_key
from tests.sites import REPO_ROOT, run_subprocess_site, stop_subprocess, subprocess_environ
from tests.test_reliability import PAGES, SLOW_SPIDER, wait_for_items
from tests.tmpfs import Tmpfs

ITEMS = [
    {"title": "A", "price": 1.5, "tags": ["x", "y"]},
    {"title": 'B, "quoted"', "price": 2, "tags": []},
]
LINES = [json.dumps(item) for item in ITEMS]


def jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- feed specs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "path", "fmt", "gz"),
    [
        ("items.jsonl", "items.jsonl", "jsonl", False),
        ("items.JL", "items.JL", "jsonl", False),
        ("items.jsonlines", "items.jsonlines", "jsonl", False),
        ("out/items.json", "out/items.json", "json", False),
        ("items.csv", "items.csv", "csv", False),
        ("items.jsonl.gz", "items.jsonl.gz", "jsonl", True),
        ("items.CSV.GZ", "items.CSV.GZ", "csv", True),
        ("items.out:jsonl", "items.out", "jsonl", False),
        ("items.out:JSONLines", "items.out", "jsonl", False),
        ("items.out:csv.gz", "items.out", "csv", True),
        ("items.gz:jsonl", "items.gz", "jsonl", False),  # the named format alone decides
        ("-:jsonl", "-", "jsonl", False),
        ("-:jl", "-", "jsonl", False),
        ("a:b/items.jsonl", "a:b/items.jsonl", "jsonl", False),  # a colon inside a path
        ("x:y.csv", "x:y.csv", "csv", False),
    ],
)
def test_feed_specs_take_the_format_from_the_ending_or_after_a_colon(
    text: str, path: str, fmt: str, gz: bool
) -> None:
    assert FeedSpec.parse(text) == FeedSpec(path, fmt, gz, overwrite=False)  # type: ignore[arg-type]
    assert FeedSpec.parse(text, overwrite=True).overwrite is True


def test_the_format_names_are_scrapys() -> None:
    assert FEED_FORMATS == {
        "csv": "csv", "jl": "jsonl", "json": "json", "jsonl": "jsonl", "jsonlines": "jsonl",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "items.xml",
            "cannot tell the feed format of 'items.xml': use jsonl (or jsonlines, jl), json or "
            "csv, optionally with .gz: end the file name in one (items.jsonl, items.csv.gz) or "
            "name it after a colon (-o items.out:jsonl, -o -:jsonl)",
        ),
        ("items", "cannot tell the feed format of 'items': use jsonl"),
        ("items.out:xml", "feed 'items.out:xml': unknown format 'xml'; use jsonl"),
        ("items.jsonl:", "feed 'items.jsonl:': unknown format ''; use jsonl"),
        ("-", "cannot tell the feed format of standard output: name it, as in -o -:jsonl"),
        (":jsonl", "feed ':jsonl': no file before the colon; -o FILE:FORMAT"),
        (
            "s3://bucket/items.jsonl",
            "feed 's3://bucket/items.jsonl': spiderfarm writes feeds to local files and to "
            "standard output only; give a file path, or -o -:jsonl",
        ),
    ],
)
def test_a_bad_feed_spec_is_named_in_the_error(text: str, message: str) -> None:
    with pytest.raises(FeedError) as info:
        FeedSpec.parse(text)
    assert str(info.value).startswith(message)


def test_feed_fields_is_a_comma_separated_setting() -> None:
    assert Settings.merge({"feed_fields": "name, price,sku"}).feed_fields == (
        "name",
        "price",
        "sku",
    )
    assert Settings.merge({"feed_fields": ["born date", "name"]}).feed_fields == (
        "born date", "name",
    )  # fmt: skip
    assert Settings().feed_fields == ()
    with pytest.raises(SettingsError) as info:
        Settings.merge({"feed_fields": "a,b,a"})
    assert str(info.value) == (
        "setting feed_fields='a,b,a' has an empty or repeated field name; give each field once"
    )


# -- formats ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".jl", ".JSONL"])
def test_jsonl_feed_writes_the_lines_as_given(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"items{suffix}"
    feed = open_feed(path)
    feed.write(LINES[:1])
    feed.write(LINES[1:])
    assert feed.count == 2
    feed.close()
    assert feed.name == str(path)
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


def test_json_feed_is_a_valid_array_after_close(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    feed = open_feed(path)
    feed.write(LINES[:1])
    feed.write(LINES[1:])
    feed.close()
    assert feed.count == 2
    assert path.read_text() == "[\n" + LINES[0] + ",\n" + LINES[1] + "\n]\n"
    assert json.loads(path.read_text(encoding="utf-8")) == ITEMS


def test_json_feed_without_items_is_an_empty_array(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    open_feed(path).close()
    assert path.read_text() == "[]\n"


def test_json_feed_keeps_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    feed = open_feed(path)
    feed.write([json.dumps({"name": "café"}, ensure_ascii=False)])
    feed.close()
    assert "café" in path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == [{"name": "café"}]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".jsonl.gz"])
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
    read = gzip.decompress if suffix.endswith(".gz") else bytes
    assert read(with_empty.read_bytes()) == read(without.read_bytes())


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
    with caplog.at_level(logging.WARNING, logger="spiderfarm.exporters"):
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


def test_csv_feed_skips_a_line_that_is_not_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    feed = open_feed(path)
    feed.write(['{"a": 1}', "not json", "[1, 2]", '{"a": 2}'])
    feed.close()
    assert path.read_text() == "a\n1\n2\n"


# -- feed_fields -----------------------------------------------------------------------
def test_feed_fields_pick_the_csv_columns_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "items.csv"
    feed = open_feed(path, fields=("tags", "title", "missing"))
    with caplog.at_level(logging.WARNING):
        feed.write(LINES)
        feed.write([json.dumps({"other": 1})])
    feed.close()
    assert path.read_text(encoding="utf-8").splitlines() == [
        "tags,title,missing",
        '"[""x"", ""y""]",A,',
        '[],"B, ""quoted""",',
        ",,",
    ]
    assert caplog.records == []  # the user chose the columns: leaving others out is no news


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_feed_fields_pick_the_json_keys_in_order(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"items{suffix}"
    feed = open_feed(path, fields=("price", "title", "missing"))
    feed.write([*LINES, "[1]"])
    feed.close()
    assert feed.count == 2
    text = path.read_text(encoding="utf-8")
    assert '{"price": 1.5, "title": "A"}' in text  # in the order asked for, missing left out
    rows = jsonl(path) if suffix == ".jsonl" else json.loads(text)
    assert rows == [{"price": 1.5, "title": "A"}, {"price": 2, "title": 'B, "quoted"'}]


# -- -o appends, -O overwrites ---------------------------------------------------------
def test_o_appends_to_a_jsonl_file_and_O_overwrites_it(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"old": 1}\n')
    feed = open_feed(FeedSpec.parse(str(path)))
    feed.write(LINES)
    feed.close()
    assert jsonl(path) == [{"old": 1}, *ITEMS]
    feed = open_feed(FeedSpec.parse(str(path), overwrite=True))
    feed.write(LINES[:1])
    feed.close()
    assert jsonl(path) == ITEMS[:1]


def test_appending_after_a_torn_last_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"old": 1}\n{"torn": ')  # as a kill -9 in mid-write may leave it
    feed = open_feed(path)
    feed.write(LINES[:1])
    feed.close()
    assert path.read_text() == '{"old": 1}\n{"torn": \n' + LINES[0] + "\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("[\n" + LINES[0] + "\n]\n", ITEMS),  # as spiderfarm writes it
        ('  [{"a": 1}, {"b": 2}]  ', [{"a": 1}, {"b": 2}, *ITEMS[1:]]),  # or anyone else
        ("[]\n", ITEMS[1:]),
        ("", ITEMS[1:]),
    ],
)
def test_o_on_a_json_array_appends_inside_it(
    tmp_path: Path, before: str, after: list[object]
) -> None:
    path = tmp_path / "items.json"
    path.write_text(before)
    feed = open_feed(path)
    feed.write(LINES[1:])
    feed.close()
    assert json.loads(path.read_text()) == after


def test_o_on_a_json_array_without_items_leaves_it_valid(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text("[\n" + LINES[0] + "\n]\n")
    open_feed(path).close()
    assert json.loads(path.read_text()) == ITEMS[:1]


@pytest.mark.parametrize("before", ["[\n" + LINES[0] + ",\n", '{"a": 1}\n'])
def test_o_refuses_a_json_file_that_is_not_a_complete_array(tmp_path: Path, before: str) -> None:
    path = tmp_path / "items.json"
    path.write_text(before)
    with pytest.raises(FeedError) as info:
        open_feed(path)
    assert str(info.value) == (
        f"feed {str(path)!r} is not a complete JSON array (a crawl stopped before it closed "
        "its feed?), so -o cannot append to it: use -O to replace it, or a .jsonl feed, "
        "which appends line by line"
    )
    assert path.read_text() == before
    open_feed(FeedSpec.parse(str(path), overwrite=True)).close()
    assert path.read_text() == "[]\n"


def test_o_on_a_csv_file_keeps_its_header_and_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "items.csv"
    path.write_text("price,title\n0,old\n")
    feed = open_feed(path)
    with caplog.at_level(logging.WARNING, logger="spiderfarm.exporters"):
        feed.write(LINES)
    feed.close()
    assert path.read_text().splitlines() == [
        "price,title", "0,old", "1.5,A", '2,"B, ""quoted"""',
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == [
        f"CSV feed {path}: columns come from its header; dropping fields ['tags']"
    ]


def test_o_on_a_csv_file_with_other_columns_than_feed_fields_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("price,title\n0,old\n")
    with pytest.raises(FeedError) as info:
        open_feed(path, fields=("title", "price"))
    assert str(info.value) == (
        f"feed {str(path)!r} has the columns 'price,title' but feed_fields is 'title,price': "
        "use -O to replace the file, or write another one"
    )
    feed = open_feed(path, fields=("price", "title"))  # the same columns: appended to
    feed.write(LINES[:1])
    feed.close()
    assert path.read_text() == "price,title\n0,old\n1.5,A\n"


# -- gzip ------------------------------------------------------------------------------
@pytest.mark.parametrize(("suffix", "plain"), [(".jsonl.gz", ".jsonl"), (".json.gz", ".json")])
def test_a_gz_feed_is_the_plain_feed_compressed(tmp_path: Path, suffix: str, plain: str) -> None:
    for name in (f"items{suffix}", f"items{plain}"):
        feed = open_feed(tmp_path / name)
        feed.write(LINES)
        feed.close()
    packed = (tmp_path / f"items{suffix}").read_bytes()
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == (tmp_path / f"items{plain}").read_bytes()


def test_a_gz_feed_is_readable_up_to_the_last_flush_before_it_is_closed(tmp_path: Path) -> None:
    # What a kill -9 leaves: no gzip trailer, but every flushed item decompresses.
    path = tmp_path / "items.jsonl.gz"
    feed = open_feed(path)
    feed.write(LINES)
    feed.flush()
    with gzip.open(path) as gz, pytest.raises(EOFError):
        gz.read()
    flushed = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    assert flushed == ("\n".join(LINES) + "\n").encode()
    feed.close()


def test_o_appends_a_gzip_member_and_O_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "items.csv.gz"
    for lines in (LINES[:1], LINES[1:]):
        feed = open_feed(path)
        feed.write(lines)
        feed.close()
    assert gzip.decompress(path.read_bytes()).decode().splitlines() == [
        "title,price,tags",
        'A,1.5,"[""x"", ""y""]"',
        '"B, ""quoted""",2,[]',
    ]  # fmt: skip  (one header: the second member continues the first one's columns)
    feed = open_feed(FeedSpec.parse(str(path), overwrite=True))
    feed.write(LINES[1:])
    feed.close()
    assert gzip.decompress(path.read_bytes()).decode().splitlines() == [
        "title,price,tags", '"B, ""quoted""",2,[]',
    ]  # fmt: skip


def test_o_refuses_to_append_to_an_unfinished_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n')[:-8])  # no trailer: a killed crawl's
    with pytest.raises(FeedError) as info:
        open_feed(path)
    assert str(info.value) == (
        f"feed {str(path)!r} is not a complete gzip file (a crawl killed before it closed its "
        "feed?), so -o cannot append to it: use -O to replace it (`gzip -dc` recovers the "
        "items it holds)"
    )


def test_o_refuses_to_append_to_a_gzip_json_array(tmp_path: Path) -> None:
    path = tmp_path / "items.json.gz"
    open_feed(path).close()
    with pytest.raises(FeedError) as info:
        open_feed(path)
    assert "-o cannot append to a gzip-compressed JSON array; use -O" in str(info.value)


# -- resume ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".jl", ".csv", ".json"])
def test_resume_cuts_the_feed_back_to_the_journaled_offset(tmp_path: Path, suffix: str) -> None:
    # Items written after the last journal checkpoint are written again by the resumed
    # crawl: the feed drops them first, so that no item appears twice.
    path = tmp_path / f"items{suffix}"
    first = open_feed(path)
    first.write(LINES[:1])
    end = first.offset()
    first.write(LINES[1:])  # after the last checkpoint: the journal does not know of it
    first.close()
    second = open_feed(FeedSpec.parse(str(path), overwrite=True), resume_at=end)  # -O or not
    assert second.offset() == end
    second.write(LINES[1:])
    second.close()
    fresh = tmp_path / f"fresh{suffix}"
    feed = open_feed(fresh)
    feed.write(LINES)
    feed.close()
    assert path.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8")


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


def test_a_job_dir_refuses_feeds_it_cannot_resume(tmp_path: Path) -> None:
    gz = tmp_path / "items.jsonl.gz"
    for text, what in (
        (str(gz), f"feed {str(gz)!r}: a gzip feed"),
        ("-:jsonl", "a feed on standard output"),
    ):
        with pytest.raises(FeedError) as info:
            open_feeds([FeedSpec.parse(text)], job_dir="job")
        assert str(info.value) == (
            f"--job-dir cannot resume {what}; with a job dir write .jsonl, .json or .csv "
            "files (compress them once the crawl is done)"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_job_refuses_a_feed_it_did_not_begin_with(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.csv"
    specs = [FeedSpec.parse(str(old)), FeedSpec.parse(str(new))]
    with pytest.raises(FeedError) as info:
        open_feeds(specs, job_dir="job", resumed={str(old): 0})
    assert str(info.value) == (
        f"feed {str(new)!r} is not a feed of the crawl in job dir 'job' (its feeds: {old}): a "
        "resumed crawl writes only the feeds it began with, so a new one would miss the items "
        "already crawled; drop it, or use another --job-dir"
    )
    assert not old.exists() and not new.exists()


def test_a_feed_given_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    specs = [
        FeedSpec.parse("items.jsonl"),
        FeedSpec.parse(str(tmp_path / "items.jsonl"), overwrite=True),
    ]
    with pytest.raises(FeedError) as info:
        open_feeds(specs)
    assert str(info.value) == (
        f"feed {str(tmp_path / 'items.jsonl')!r} is given twice (-o/-O); give each feed once"
    )


def test_no_feed_is_touched_unless_every_feed_opens(tmp_path: Path) -> None:
    keep, new = tmp_path / "keep.jsonl", tmp_path / "new.csv"
    keep.write_text(LINES[0] + "\n")
    bad = tmp_path / "items.json"
    bad.write_text("[\n" + LINES[0])  # not a complete array: -o refuses it
    specs = [
        FeedSpec.parse(str(keep), overwrite=True),
        FeedSpec.parse(str(new)),
        FeedSpec.parse(str(bad)),
    ]
    with pytest.raises(FeedError):
        open_feeds(specs)
    assert keep.read_text() == LINES[0] + "\n"  # not emptied by its -O
    assert not new.exists()


def test_every_feed_gets_every_item(tmp_path: Path) -> None:
    names = ["a.jsonl", "b.json", "c.csv", "d.jsonl.gz"]
    feeds = open_feeds([FeedSpec.parse(str(tmp_path / name)) for name in names])
    feeds.write(LINES[:1])
    feeds.write(LINES[1:])
    offsets = feeds.offsets()
    feeds.close()
    assert offsets == {
        str(tmp_path / "a.jsonl"): len("\n".join(LINES)) + 1,
        str(tmp_path / "b.json"): len("[\n" + ",\n".join(LINES)),
        str(tmp_path / "c.csv"): len((tmp_path / "c.csv").read_bytes()),
        str(tmp_path / "d.jsonl.gz"): len("\n".join(LINES)) + 1,  # uncompressed: no resume
    }
    assert jsonl(tmp_path / "a.jsonl") == ITEMS
    assert json.loads((tmp_path / "b.json").read_text()) == ITEMS
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 3
    assert (
        gzip.decompress((tmp_path / "d.jsonl.gz").read_bytes())
        == (tmp_path / "a.jsonl").read_bytes()
    )


def test_after_a_failed_write_no_feed_takes_more_items(tmp_path: Path) -> None:
    # /dev/full fails every write that reaches it with ENOSPC, as a full disk does.
    good = tmp_path / "good.jsonl"
    feeds = open_feeds([FeedSpec.parse("/dev/full:jsonl"), FeedSpec.parse(str(good))])
    big = [json.dumps({"text": "x" * 100_000})]  # more than the buffer holds: written now
    with pytest.raises(OSError) as info:
        feeds.write(big)
    assert info.value.errno == 28
    with pytest.raises(OSError) as later:
        feeds.write(LINES)  # so this page stays queued, for a resumed job to fetch again
    assert "a feed failed earlier" in str(later.value)
    feeds.write([])  # a page without items has nothing to lose
    feeds.close()
    assert good.read_text() == ""  # every feed stopped at the same item


def test_a_write_that_does_not_fit_is_cut_off_and_every_feed_ends_at_one_item(
    tmpfs: Callable[[str, int], Tmpfs],
) -> None:
    # A real full disk: a write fails part-way (the file takes what fits, then ENOSPC).
    disk = tmpfs("disk", 64)
    names = ["a.jsonl", "b.json", "c.csv"]
    feeds = open_feeds([FeedSpec.parse(str(disk.path / name)) for name in names])
    batches = 0
    with pytest.raises(OSError) as info:
        while True:
            feeds.write([json.dumps({"n": batches, "text": "x" * 3000})])
            batches += 1
    assert info.value.errno == 28 and info.value.filename in {str(disk.path / n) for n in names}
    assert 0 < batches < 30
    with pytest.raises(OSError, match="a feed failed earlier"):
        feeds.write(LINES)  # its page stays queued
    offsets = feeds.offsets()
    feeds.close()
    # Every file ends after the last whole batch: the torn one was cut off, in all of them.
    lines = (disk.path / "a.jsonl").read_bytes()
    assert offsets[str(disk.path / "a.jsonl")] == len(lines)
    assert [item["n"] for item in jsonl(disk.path / "a.jsonl")] == list(range(batches))
    rows = list(csv.DictReader(io.StringIO((disk.path / "c.csv").read_text())))
    assert [int(row["n"]) for row in rows] == list(range(batches))
    assert offsets[str(disk.path / "c.csv")] == (disk.path / "c.csv").stat().st_size
    array = (disk.path / "b.json").read_bytes()
    assert len(array) - offsets[str(disk.path / "b.json")] in (0, 3)  # "\n]\n", if it fit
    whole = array if array.endswith(b"]\n") else array + b"\n]"
    assert [item["n"] for item in json.loads(whole)] == list(range(batches))
    assert feeds.failure is not None and feeds.lost == 0


def test_a_gzip_feed_that_cannot_flush_is_cut_back_to_its_last_flush_and_counts_the_loss(
    tmp_path: Path, tmpfs: Callable[[str, int], Tmpfs]
) -> None:
    disk = tmpfs("disk", 4)  # one page: the gzip header and a little more
    packed, plain = disk.path / "items.jsonl.gz", tmp_path / "items.jsonl"
    feeds = open_feeds([FeedSpec.parse(str(packed)), FeedSpec.parse(str(plain))])
    feeds.write(LINES[:1])
    feeds.flush()
    noise = base64.b64encode(os.urandom(6000)).decode()  # incompressible, held till a flush
    feeds.write([json.dumps({"noise": noise})])
    with pytest.raises(OSError) as info:
        feeds.flush()
    assert (info.value.errno, info.value.filename) == (28, str(packed))
    # The item written since the last flush is in no file: counted as written, then lost.
    assert feeds.lost == 1
    feeds.close()
    assert gzip.decompress(packed.read_bytes()) == (LINES[0] + "\n").encode()  # a whole gzip
    assert plain.read_text() == LINES[0] + "\n"  # cut back too: both end at the same item


def test_a_feed_that_cannot_be_made_durable_takes_no_more_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = open_feeds([FeedSpec.parse(str(tmp_path / "items.jsonl"))])
    feeds.write(LINES[:1])
    assert feeds.sync()
    feeds.write(LINES[1:])

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(exporters, "_fdatasync", failing)
    # The journal must not record an offset, or a page, past what may not be on disk.
    assert not feeds.sync()
    monkeypatch.undo()
    assert not feeds.sync()  # nor later: what failed to sync may be lost
    assert feeds.failure is not None and feeds.failure[0] == str(tmp_path / "items.jsonl")
    with pytest.raises(OSError, match="a feed failed earlier"):
        feeds.write(LINES)
    feeds.close()


def test_an_unwritable_path_is_named(tmp_path: Path) -> None:
    parent = tmp_path / "not_a_dir"
    parent.write_text("")
    for path, reason in (
        (parent / "items.jsonl", "Not a directory"),
        (tmp_path / "missing" / "items.json", "No such file or directory"),
        (tmp_path, "Is a directory"),
    ):
        spec = FeedSpec.parse(f"{path}:jsonl" if path == tmp_path else str(path))
        with pytest.raises(FeedError) as info:
            open_feed(spec)
        assert str(info.value) == (
            f"cannot write the feed {str(path)!r}: {reason}; choose a writable path with -o"
        )


# -- resume through the server's job dir -------------------------------------------------
FIVE = """
from spiderfarm import Spider

class Five(Spider):
    name = "five"
    start_urls = [f"http://a.test/{n}" for n in range(5)]
"""


def test_an_old_single_feed_job_dir_still_resumes(tmp_path: Path) -> None:
    spider = tmp_path / "five.py"
    spider.write_text(FIVE)
    out = tmp_path / "out.jsonl"
    out.write_text(LINES[0] + "\n" + LINES[1] + "\n")
    journal = Journal(tmp_path / "job")  # as a job dir from before several feeds holds it
    journal.commit(
        [], {"spider": "five", "feed_path": str(out), "feed_offset": str(len(LINES[0]) + 1)}
    )
    journal.close()
    server = FarmServer(
        ServerConfig(spider_ref=str(spider), output=[FeedSpec.parse(str(out))],
                     job_dir=tmp_path / "job")
    )  # fmt: skip
    try:
        assert server.feed.offsets() == {str(out): len(LINES[0]) + 1}
        assert out.read_text() == LINES[0] + "\n"
    finally:
        assert server.journal is not None
        server.journal.close()
        server.feed.close()


# -- the command line ------------------------------------------------------------------
def crawl_quotes(site: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(["crawl", "quotes", "-a", f"start_url={site}", "--workers", "2", *args])
    assert result.returncode == 0, result.stderr
    return result


def canonical(items: list[dict[str, object]]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def check_quotes(items: list[dict[str, object]], shared_dir: Path) -> None:
    truth = json.loads((shared_dir / "sites" / "quotes-groundtruth.json").read_text())
    assert len(items) == 150
    assert {i["text"] for i in items if i["type"] == "quote"} == {
        q["text"] for q in truth["quotes"]
    }
    assert {i["name"] for i in items if i["type"] == "author"} == {
        a["name"] for a in truth["authors"]
    }
    assert len(set(canonical(items))) == 150


def test_cli_o_appends_and_O_overwrites(quotes_site: str, tmp_path: Path, shared_dir: Path) -> None:
    appended, replaced = tmp_path / "appended.jsonl", tmp_path / "replaced.jsonl"
    array, table = tmp_path / "array.json", tmp_path / "table.csv"
    for path in (appended, replaced):
        path.write_text('{"old": 1}\n{"old": 2}\n')
    array.write_text('[{"old": 1}]\n')
    table.write_text("type,author\nquote,Someone\n")
    crawl_quotes(quotes_site, "-o", str(appended), "-O", str(replaced), "-o", str(array),
                 "-o", str(table))  # fmt: skip
    items = jsonl(appended)
    assert items[:2] == [{"old": 1}, {"old": 2}] and len(items) == 152
    check_quotes(items[2:], shared_dir)
    assert canonical(jsonl(replaced)) == canonical(items[2:])
    rows = json.loads(array.read_text())
    assert rows[0] == {"old": 1} and canonical(rows[1:]) == canonical(items[2:])
    lines = table.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["type,author", "quote,Someone"]  # one header: the file's own
    assert sorted(lines[2:]) == sorted(f"{i['type']},{i.get('author', '')}" for i in items[2:])


def test_cli_several_feeds_get_the_same_items(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    t = tmp_path
    result = crawl_quotes(quotes_site, "-o", str(t / "a.jsonl"), "-o", str(t / "b.json"),
                          "-o", str(t / "c.jl.gz"), "-O", str(t / "d.out:jsonl"),
                          "-o", str(t / "e.csv"), "-o", str(t / "f.csv.gz"))  # fmt: skip
    assert "crawl finished: 60 pages, 150 items, 0 errors" in result.stdout
    assert (
        f"items written to {t / 'a.jsonl'}, {t / 'b.json'}, {t / 'c.jl.gz'}, {t / 'd.out'}, "
        f"{t / 'e.csv'}, {t / 'f.csv.gz'}"
    ) in result.stdout
    items = jsonl(t / "a.jsonl")
    check_quotes(items, shared_dir)
    unzipped = subprocess.run(
        ["gzip", "-dc", str(t / "c.jl.gz")], capture_output=True, check=True
    ).stdout
    assert unzipped == (t / "a.jsonl").read_bytes()  # the same lines, in the same order
    assert (t / "d.out").read_bytes() == (t / "a.jsonl").read_bytes()
    assert json.loads((t / "b.json").read_text()) == items
    csv_gz = subprocess.run(["gzip", "-dc", str(t / "f.csv.gz")], capture_output=True, check=True)
    assert csv_gz.stdout == (t / "e.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO((t / "e.csv").read_text(encoding="utf-8"))))
    first = list(items[0])  # the columns: the first item's keys
    assert list(rows[0]) == first
    assert len(rows) == 150


def test_cli_feed_fields_order_every_feeds_fields(quotes_site: str, tmp_path: Path) -> None:
    table, lines = tmp_path / "items.csv", tmp_path / "items.jsonl"
    result = crawl_quotes(quotes_site, "-o", str(table), "-o", str(lines),
                          "-s", "feed_fields=name,type,author")  # fmt: skip
    assert "dropping fields" not in result.stderr
    rows = list(csv.reader(io.StringIO(table.read_text(encoding="utf-8"))))
    assert rows[0] == ["name", "type", "author"]
    body = rows[1:]
    assert len(body) == 150
    quotes = [r for r in body if r[1] == "quote"]
    authors = [r for r in body if r[1] == "author"]
    assert len(quotes) == 100 and all(r[0] == "" and r[2] for r in quotes)  # no name: empty
    assert len(authors) == 50 and all(r[0] and r[2] == "" for r in authors)
    items = jsonl(lines)
    assert {tuple(i) for i in items} == {("type", "author"), ("name", "type")}  # in order


def test_cli_o_dash_writes_the_items_and_only_them_to_stdout(
    quotes_site: str, shared_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.jsonl"
    result = crawl_quotes(quotes_site, "-o", "-:jsonl", "-o", str(copy))
    check_quotes([json.loads(line) for line in result.stdout.splitlines()], shared_dir)
    assert result.stdout.encode() == copy.read_bytes()
    assert "crawl finished: 60 pages, 150 items, 0 errors" in result.stderr
    assert f"items written to standard output, {copy}" in result.stderr


NOISY = """
from spiderfarm import Request, Spider

print("noise at import")

class Noisy(Spider):
    name = "noisy"

    def start_requests(self):
        print("noise on the server")
        yield Request(self.start_url)

    def parse(self, response):
        print("noise on a worker")
        yield {"url": response.url}
        yield from response.follow_all(css="li.next a")
"""


def test_cli_o_dash_sends_what_a_spider_prints_to_stderr(quotes_site: str, tmp_path: Path) -> None:
    spider = tmp_path / "noisy.py"
    spider.write_text(NOISY)
    result = run_cli(["crawl", str(spider), "-a", f"start_url={quotes_site}", "--workers", "1",
                      "-O", "-:jsonl"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    pages = [quotes_site] + [f"{quotes_site}page/{n}/" for n in range(2, 11)]
    assert sorted(json.loads(line)["url"] for line in result.stdout.splitlines()) == sorted(pages)
    assert result.stderr.count("noise on a worker\n") == 10
    assert result.stderr.count("noise on the server\n") == 1
    assert "noise at import" in result.stderr


def test_server_o_dash_keeps_stdout_for_the_items(
    quotes_site: str, shared_dir: Path, tmp_path: Path
) -> None:
    key = write_key(tmp_path)
    err_path = tmp_path / "server.err"
    with err_path.open("w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "spiderfarm.server", "quotes", "-a", f"start_url={quotes_site}",
             "-o", "-:jsonl", "--bind", "127.0.0.1:0", "--authkey-file", str(key)],
            cwd=REPO_ROOT, env=subprocess_environ(), stdout=subprocess.PIPE, stderr=err,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (found := re.search(r"listening on (127\.0\.0\.1:\d+)", err_path.read_text())):
            assert time.monotonic() < deadline and server.poll() is None, err_path.read_text()
            time.sleep(0.02)
        worker = start_worker(found.group(1), key)
        stdout, _ = server.communicate(timeout=60)
        assert wait_all([worker], 30) == [0]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err_path.read_text()
    check_quotes([json.loads(line) for line in stdout.splitlines()], shared_dir)
    assert "crawl finished: 60 pages, 150 items" in err_path.read_text()


@pytest.fixture(scope="module")
def catalogue() -> Iterator[str]:
    proc, base = run_subprocess_site(
        [sys.executable, "-m", "spiderfarm.demosite", "--port", "0", "--pages", str(PAGES)]
    )
    try:
        yield base
    finally:
        stop_subprocess(proc)


@pytest.mark.timeout(240)
def test_kill_9_the_server_and_resume_every_feed(tmp_path: Path, catalogue: str) -> None:
    spider = tmp_path / "slowcat.py"
    spider.write_text(textwrap.dedent(SLOW_SPIDER))
    lines, table, array = tmp_path / "items.jsonl", tmp_path / "items.csv", tmp_path / "items.json"
    lines.write_text('{"old": true}\n')  # -o: kept, on the first run and on the resume
    table.write_text("emptied by -O on the first run only\n")
    args = [str(spider), "-a", f"start_url={catalogue}", "--job-dir", str(tmp_path / "job"),
            "-o", str(lines), "-O", str(table), "-o", str(array)]  # fmt: skip
    key = write_key(tmp_path)
    server = ServerProcess(args, key, tmp_path)
    workers = [start_worker(server.address, key, "--give-up-s", "60") for _ in range(3)]
    wait_for_items(lines, PAGES // 2)
    server.proc.kill()
    server.proc.wait()
    server.stop()
    assert 0 < len(lines.read_text().splitlines()) < PAGES  # killed mid-crawl
    restarted = ServerProcess(args, key, tmp_path, bind=server.address)
    assert wait_all(workers, 120) == [0, 0, 0]
    assert restarted.wait(30) == 0, restarted.output()
    log = restarted.err_path.read_text()
    assert "resuming from" in log
    assert f"feed {table}: resumed from the job dir, so -O does not empty it" in log
    expected = {catalogue.rstrip("/") + p for p in Catalogue(pages=PAGES).paths()}
    items = jsonl(lines)
    assert items[0] == {"old": True}
    urls = [str(i["url"]) for i in items[1:]]
    assert len(urls) == len(set(urls)) == PAGES and set(urls) == expected
    rows = list(csv.reader(io.StringIO(table.read_text())))
    assert rows[0] == ["url", "sku"]
    assert sorted(r[0] for r in rows[1:]) == sorted(expected)  # every row once, one header
    assert sorted(str(i["url"]) for i in json.loads(array.read_text())) == sorted(expected)
