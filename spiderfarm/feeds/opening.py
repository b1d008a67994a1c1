"""Opening one feed: appending to, overwriting or resuming its file (cut back to the
journaled offset, continuing a JSON array, a CSV header or a gzip stream), checked before
anything in the file changes."""

from __future__ import annotations

import csv
import gzip
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import FeedError
from ..exporters import (
    CsvFeed,
    FileOutput,
    GzipOutput,
    JsonArrayFeed,
    JsonLinesFeed,
    Output,
)
from .spec import FeedSink, FeedSpec

logger = logging.getLogger("spiderfarm.feeds")

__all__ = ["open_feed"]

_CHUNK = 1 << 16


@dataclass(slots=True)
class Opened:
    """A feed's file, open but not yet changed: every feed is checked before any is cut."""

    spec: FeedSpec
    fh: IO[bytes]
    created: bool
    cut: int | None = None  # truncate to this before writing
    prefix: bytes = b""  # written first
    header: list[str] | None = None  # a CSV file's existing header
    has_items: bool = False  # a JSON array that already holds items


def cannot_write(spec: FeedSpec, exc: OSError) -> FeedError:
    where = "to standard output" if spec.is_stdout else repr(spec.path)
    flag = "-O" if spec.overwrite else "-o"
    return FeedError(
        f"cannot write the feed {where}: {exc.strerror or exc}; choose a writable path with {flag}"
    )


def _last_byte(fh: IO[bytes], end: int) -> tuple[int, int] | None:
    """Position and value of the last non-whitespace byte before ``end``."""
    while end > 0:
        start = max(0, end - _CHUNK)
        fh.seek(start)
        chunk = fh.read(end - start).rstrip()
        if chunk:
            return start + len(chunk) - 1, chunk[-1]
        end = start
    return None


def _first_byte(fh: IO[bytes], end: int) -> int | None:
    fh.seek(0)
    pos = 0
    while pos < end:
        chunk = fh.read(min(_CHUNK, end - pos)).lstrip()
        if chunk:
            return chunk[0]
        pos += _CHUNK
    return None


def _csv_header(first_line: bytes) -> list[str]:
    rows = list(csv.reader([first_line.decode("utf-8", "replace").rstrip("\r\n")]))
    return rows[0] if rows else []


def open_file(spec: FeedSpec, resume_at: int | None, fields: tuple[str, ...]) -> Opened:
    """Open ``spec``'s file and decide how to continue it, without changing it yet."""
    if spec.is_stdout:
        try:
            return Opened(spec, os.fdopen(os.dup(1), "wb", buffering=0), created=False)
        except OSError as exc:
            raise cannot_write(spec, exc) from None
    path = Path(spec.path)
    try:
        existed = path.exists()
        fh: IO[bytes] = path.open("a+b", buffering=_CHUNK)  # nothing is cut before all are open
    except OSError as exc:
        raise cannot_write(spec, exc) from None
    opened = Opened(spec, fh, created=not existed)
    try:
        _plan(opened, resume_at, fields)
    except BaseException:
        fh.close()
        raise
    return opened


def _plan(opened: Opened, resume_at: int | None, fields: tuple[str, ...]) -> None:
    spec, fh = opened.spec, opened.fh
    size = fh.seek(0, os.SEEK_END)
    end = size  # the existing content kept: [0, end)
    if resume_at is not None:
        if spec.gzip:
            raise FeedError(f"feed {spec.path!r}: a gzip-compressed feed cannot be resumed")
        if size > resume_at:
            opened.cut = end = resume_at
        elif size < resume_at:
            logger.warning(
                "feed %s is shorter than the job journal recorded (%d < %d bytes): "
                "items of the earlier run are missing from it",
                spec.path,
                size,
                resume_at,
            )
    elif spec.overwrite:
        opened.cut = end = 0
    if end == 0:
        opened.cut = 0 if size else None
        opened.prefix = b"[" if spec.format == "json" else b""
        return
    appending = resume_at is None
    if spec.gzip:
        _plan_gzip_append(opened)
    elif spec.format == "json":
        _plan_json(opened, end, appending)
    else:
        if _last_byte_raw(fh, end) != b"\n":
            opened.prefix = b"\n"  # a torn last line (a crawl killed mid-write) stays alone
        if spec.format == "csv":
            fh.seek(0)
            opened.header = _csv_header(fh.readline(end))
    if opened.header is not None and fields and opened.header != list(fields):
        todo = (
            "use -O to replace the file, or write another one"
            if appending
            else "resume the job with the feed_fields it began with"
        )
        raise FeedError(
            f"feed {spec.path!r} has the columns {','.join(opened.header)!r} but feed_fields "
            f"is {','.join(fields)!r}: {todo}"
        )


def _last_byte_raw(fh: IO[bytes], end: int) -> bytes:
    fh.seek(end - 1)
    return fh.read(1)


def _plan_json(opened: Opened, end: int, appending: bool) -> None:
    fh = opened.fh
    last = _last_byte(fh, end)
    if last is None:  # only whitespace: start the array afresh
        opened.cut, opened.prefix = 0, b"["
        return
    if not appending:  # resuming: the journaled offset lies just after an item, or the "["
        opened.has_items = last[1] != ord("[")
        return
    if _first_byte(fh, end) != ord("[") or last[1] != ord("]"):
        raise FeedError(
            f"feed {opened.spec.path!r} is not a complete JSON array (a crawl stopped before "
            "it closed its feed?), so -o cannot append to it: use -O to replace it, or a "
            ".jsonl feed, which appends line by line"
        )
    before = _last_byte(fh, last[0])
    assert before is not None  # the "[" at least
    opened.cut = before[0] + 1  # reopen the array just after its last item
    opened.has_items = before[1] != ord("[")


def _plan_gzip_append(opened: Opened) -> None:
    spec = opened.spec
    if spec.format == "json":
        raise FeedError(
            f"feed {spec.path!r}: -o cannot append to a gzip-compressed JSON array; use -O to "
            "replace it, or a .jsonl.gz feed, which -o appends to"
        )
    opened.fh.seek(0)
    try:
        with gzip.GzipFile(fileobj=opened.fh, mode="rb") as gz:
            first = gz.readline()
            while gz.read(1 << 20):  # a new gzip member may follow only a complete one
                pass
    except (EOFError, OSError, zlib.error):
        raise FeedError(
            f"feed {spec.path!r} is not a complete gzip file (a crawl killed before it closed "
            "its feed?), so -o cannot append to it: use -O to replace it (`gzip -dc` recovers "
            "the items it holds)"
        ) from None
    if spec.format == "csv" and first.strip():
        opened.header = _csv_header(first)


def start(opened: Opened, fields: tuple[str, ...]) -> FeedSink:
    """Change the file as planned and make its feed, which writes to the file descriptor
    itself (``fh`` buffers only the reads that planned it)."""
    spec, fh = opened.spec, opened.fh
    if opened.cut is not None:
        fh.truncate(opened.cut)
    size = 0 if spec.is_stdout else fh.seek(0, os.SEEK_END)
    raw = FileOutput(fh, size, cuttable=not spec.is_stdout)
    out: Output = GzipOutput(raw) if spec.gzip else raw
    start = 0 if spec.is_stdout or spec.gzip else size
    name, prefix = str(spec), opened.prefix
    if spec.format == "jsonl":
        return JsonLinesFeed(name, out, start, fields, prefix)
    if spec.format == "json":
        return JsonArrayFeed(name, out, start, fields, prefix, has_items=opened.has_items)
    return CsvFeed(name, out, start, fields, prefix, header=opened.header)


def open_feed(
    spec: FeedSpec | str | os.PathLike[str],
    *,
    fields: tuple[str, ...] = (),
    resume_at: int | None = None,
) -> FeedSink:
    """Open one feed; a path or string is read as ``-o`` reads it (it appends).

    With ``resume_at`` (a resumed job), the file is cut back to that byte offset — the end
    of the last items the job journal recorded — and appended to.

    Raises:
        FeedError: an unknown format, a file that cannot be created or written, or one that
            cannot be continued (see ``open_feeds``).
    """
    if not isinstance(spec, FeedSpec):
        spec = FeedSpec.parse(os.fspath(spec))
    opened = open_file(spec, resume_at, fields)
    try:
        return start(opened, fields)
    except OSError as exc:
        opened.fh.close()
        raise cannot_write(spec, exc) from None
