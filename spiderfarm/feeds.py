"""Item feeds: the files (or standard output) the server writes items to.

A ``FeedSpec`` is one ``-o``/``-O`` argument (``FILE``, ``FILE:FORMAT``, ``-:FORMAT``);
``open_feeds`` opens all of them — appending, overwriting or resuming each, and checking
every one before it changes any — as one ``FeedSet``, which writes each batch of items to
every feed and reports the byte offsets the job journal records. The formats themselves
are in ``exporters.py``.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from .errors import FeedError
from .exporters import (
    CsvFeed,
    FeedMark,
    FileOutput,
    GzipOutput,
    JsonArrayFeed,
    JsonLinesFeed,
    Output,
)

logger = logging.getLogger(__name__)

__all__ = ["FEED_FORMATS", "FeedSet", "FeedSink", "FeedSpec", "open_feed", "open_feeds"]

FeedFormat = Literal["jsonl", "json", "csv"]

FEED_FORMATS: dict[str, FeedFormat] = {
    "csv": "csv",
    "jl": "jsonl",
    "json": "json",
    "jsonl": "jsonl",
    "jsonlines": "jsonl",
}
"""Format names (as after ``FILE:`` and as file extensions) and the format each means;
each may end in ``.gz``. The names are Scrapy's."""

STDOUT = "-"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 16
_FORMATS_HELP = (
    "jsonl (or jsonlines, jl), json or csv, optionally with .gz: "
    "end the file name in one (items.jsonl, items.csv.gz) or name it after a colon "
    "(-o items.out:jsonl, -o -:jsonl)"
)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One feed as ``-o`` or ``-O`` names it."""

    path: str  # as given; "-" is standard output
    format: FeedFormat
    gzip: bool = False
    overwrite: bool = False  # -O: empty the file first (unless a job dir resumes it)

    @classmethod
    def parse(cls, text: str, *, overwrite: bool = False) -> FeedSpec:
        """``FILE``, ``FILE:FORMAT`` or ``-:FORMAT``; with ``FILE:FORMAT`` the format
        alone decides (``jsonl.gz`` compresses), else the file name's ending does.

        Raises:
            FeedError: no format can be told, or it is not one spiderfarm writes.
        """
        flag = "-O" if overwrite else "-o"
        if _URI.match(text):
            raise FeedError(
                f"feed {text!r}: spiderfarm writes feeds to local files and to standard "
                f"output only; give a file path, or {flag} -:jsonl"
            )
        path, colon, token = text.rpartition(":")
        named = token.lower()
        if colon and (_format_of(named) is not None or not re.search(r"[./\\]", token)):
            # FILE:FORMAT (Scrapy's form). A colon inside a path ("a:b/x.jsonl") is left be.
            fmt = _format_of(named)
            if fmt is None:
                raise FeedError(f"feed {text!r}: unknown format {token!r}; use {_FORMATS_HELP}")
            if not path:
                raise FeedError(f"feed {text!r}: no file before the colon; {flag} FILE:FORMAT")
            return cls(path, fmt[0], fmt[1], overwrite)
        if text == STDOUT:
            raise FeedError(
                f"cannot tell the feed format of standard output: name it, as in {flag} -:jsonl"
            )
        fmt = _format_of(Path(text).name.lower(), extension=True)
        if fmt is None:
            raise FeedError(f"cannot tell the feed format of {text!r}: use {_FORMATS_HELP}")
        return cls(text, fmt[0], fmt[1], overwrite)

    @property
    def is_stdout(self) -> bool:
        return self.path == STDOUT

    @property
    def key(self) -> str:
        """The feed's name in the job journal: its absolute path."""
        return STDOUT if self.is_stdout else str(Path(self.path).resolve())

    @property
    def resumable(self) -> bool:
        """Whether a job dir can cut this feed back to an offset and append to it."""
        return not (self.is_stdout or self.gzip)

    def __str__(self) -> str:
        return "standard output" if self.is_stdout else self.path


def _format_of(name: str, extension: bool = False) -> tuple[FeedFormat, bool] | None:
    """(format, gzip) of a format name, or of a file name's ending with ``extension``."""
    compressed = name.endswith(".gz")
    if compressed:
        name = name[:-3]
    if extension:
        name = name.rpartition(".")[2] if "." in name else ""
    fmt = FEED_FORMATS.get(name)
    return None if fmt is None else (fmt, compressed)


def as_feed_specs(output: str | Sequence[str | FeedSpec] | None) -> list[FeedSpec]:
    """Feed specs from ``ServerConfig.output``: a string is parsed as ``-o`` parses it."""
    if output is None:
        return []
    if isinstance(output, str):
        output = [output]
    return [s if isinstance(s, FeedSpec) else FeedSpec.parse(s) for s in output]


class FeedSink(Protocol):
    """One feed (``exporters.FileFeed``): ``write`` puts a batch of items in the file or
    raises OSError, ``rewind`` cuts a torn batch off after a failure."""

    name: str
    count: int

    @property
    def buffered(self) -> bool: ...
    def write(self, lines: list[str]) -> None: ...
    def flush(self) -> None: ...
    def position(self) -> int: ...
    def offset(self) -> int: ...
    def mark(self) -> FeedMark: ...
    def rewind(self, mark: FeedMark) -> None: ...
    def undo(self) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


# -- opening -----------------------------------------------------------------------------
@dataclass(slots=True)
class _Opened:
    """A feed's file, open but not yet changed: every feed is checked before any is cut."""

    spec: FeedSpec
    fh: IO[bytes]
    created: bool
    cut: int | None = None  # truncate to this before writing
    prefix: bytes = b""  # written first
    header: list[str] | None = None  # a CSV file's existing header
    has_items: bool = False  # a JSON array that already holds items


def _cannot_write(spec: FeedSpec, exc: OSError) -> FeedError:
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


def _open(spec: FeedSpec, resume_at: int | None, fields: tuple[str, ...]) -> _Opened:
    """Open ``spec``'s file and decide how to continue it, without changing it yet."""
    if spec.is_stdout:
        try:
            return _Opened(spec, os.fdopen(os.dup(1), "wb", buffering=0), created=False)
        except OSError as exc:
            raise _cannot_write(spec, exc) from None
    path = Path(spec.path)
    try:
        existed = path.exists()
        fh: IO[bytes] = path.open("a+b", buffering=_CHUNK)  # nothing is cut before all are open
    except OSError as exc:
        raise _cannot_write(spec, exc) from None
    opened = _Opened(spec, fh, created=not existed)
    try:
        _plan(opened, resume_at, fields)
    except BaseException:
        fh.close()
        raise
    return opened


def _plan(opened: _Opened, resume_at: int | None, fields: tuple[str, ...]) -> None:
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


def _plan_json(opened: _Opened, end: int, appending: bool) -> None:
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


def _plan_gzip_append(opened: _Opened) -> None:
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


def _start(opened: _Opened, fields: tuple[str, ...]) -> FeedSink:
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
    opened = _open(spec, resume_at, fields)
    try:
        return _start(opened, fields)
    except OSError as exc:
        opened.fh.close()
        raise _cannot_write(spec, exc) from None


def open_feeds(
    specs: Sequence[FeedSpec],
    *,
    fields: tuple[str, ...] = (),
    job_dir: str | None = None,
    resumed: Mapping[str, int] | None = None,
) -> FeedSet:
    """Open every feed, or none: each is checked before any file is cut or appended to.

    ``job_dir`` names the job dir when there is one; ``resumed`` holds the journaled
    offset of each feed of a job that is being resumed (None for a new job). A resumed
    feed is cut back to its offset whether ``-o`` or ``-O`` named it.

    Raises:
        FeedError: a feed given twice, one a job dir cannot resume, one not part of the
            resumed job, or one that cannot be opened or continued.
    """
    seen: dict[str, FeedSpec] = {}
    for spec in specs:
        name = "the feed on standard output" if spec.is_stdout else f"feed {spec.path!r}"
        if spec.key in seen:
            raise FeedError(f"{name} is given twice (-o/-O); give each feed once")
        seen[spec.key] = spec
        if job_dir is not None and not spec.resumable:
            what = "a feed on standard output" if spec.is_stdout else f"{name}: a gzip feed"
            raise FeedError(
                f"--job-dir cannot resume {what}; with a job dir write .jsonl, .json or .csv "
                "files (compress them once the crawl is done)"
            )
        if resumed is not None and spec.key not in resumed:
            known = ", ".join(sorted(resumed)) or "none"
            raise FeedError(
                f"{name} is not a feed of the crawl in job dir {job_dir!r} "
                f"(its feeds: {known}): a resumed crawl writes only the feeds it began with, "
                "so a new one would miss the items already crawled; drop it, or use "
                "another --job-dir"
            )
    opened: list[_Opened] = []
    feeds: dict[str, FeedSink] = {}
    try:
        for spec in specs:
            resume_at = resumed[spec.key] if resumed is not None else None
            if resume_at is not None and spec.overwrite:
                logger.warning(
                    "feed %s: resumed from the job dir, so -O does not empty it: it is cut "
                    "back to byte %d and appended to",
                    spec,
                    resume_at,
                )
            opened.append(_open(spec, resume_at, fields))
        for item in opened:
            try:
                feeds[item.spec.key] = _start(item, fields)
            except OSError as exc:
                raise _cannot_write(item.spec, exc) from None
    except BaseException:
        for item in opened:
            item.fh.close()
            if item.created:
                Path(item.spec.path).unlink(missing_ok=True)  # leave no trace of a failed start
        raise
    return FeedSet(feeds)


class FeedSet:
    """Every feed of a crawl: each batch of items goes to all of them, or to none.

    A batch is *written* when every feed's ``write`` has returned: its bytes are then in
    every file (nothing is buffered in this process), except that a gzip feed holds its
    items in its compressor until the next ``flush`` (every tick). When a write or flush
    fails (a full disk), every feed is cut back to where all of them last held whole
    batches — the batch's start, or for a set with gzip feeds the last flush; the items
    written since that flush, counted as written before, are then ``lost`` (without a job
    dir, which cannot resume gzip feeds, they are gone) — and the set takes no more items:
    each later batch fails too, so its page stays queued. ``offsets`` then stays where the
    feeds were cut, so a resumed job cuts every feed back to the same item.
    """

    def __init__(self, feeds: Mapping[str, FeedSink] | None = None) -> None:
        """``feeds``: each feed by its journal key (``FeedSpec.key``)."""
        self._feeds = dict(feeds or {})
        self._buffered = any(feed.buffered for feed in self._feeds.values())
        # With gzip feeds, where every feed held whole batches at the last flush.
        self._safe = self._marks()
        self._pending = 0  # items a buffered set has written since its last flush
        self.lost = 0  # items counted as written that a failure took out of the files
        self._failure: tuple[str, OSError] | None = None
        self._synced: dict[str, int] = {}  # the offsets last made durable
        self._sync_failed = False

    @property
    def feeds(self) -> list[FeedSink]:
        return list(self._feeds.values())

    @property
    def failure(self) -> tuple[str, OSError] | None:
        """The first feed that failed (its name) and how, or None."""
        return self._failure

    def _marks(self) -> dict[str, FeedMark]:
        return {key: feed.mark() for key, feed in self._feeds.items()}

    def write(self, lines: list[str]) -> None:
        """Write the batch to every feed.

        Raises:
            OSError: a feed failed, now or before (with that feed's name as its filename);
                no feed keeps any of the batch.
        """
        if not lines or not self._feeds:
            return
        if self._failure is not None:
            name, exc = self._failure
            raise OSError(exc.errno, f"a feed failed earlier: {exc.strerror or exc}", name)
        for done, (key, feed) in enumerate(self._feeds.items()):
            try:
                feed.write(lines)
            except OSError as exc:
                raise self._fail(key, exc, self.feeds[: done + 1]) from None
        if self._buffered:
            self._pending += len(lines)

    def flush(self) -> None:
        """Flush the gzip feeds (a sync flush: what they hold decompresses).

        Raises:
            OSError: a feed failed (see the class).
        """
        if not self._buffered or self._failure is not None:
            return
        for key, feed in self._feeds.items():
            try:
                feed.flush()
            except OSError as exc:
                raise self._fail(key, exc, []) from None
        self._safe, self._pending = self._marks(), 0

    def _fail(self, key: str, exc: OSError, wrote: list[FeedSink]) -> OSError:
        """Cut every feed back to where all of them hold the same whole batches: a set
        with gzip feeds to its last flush, else by undoing the failed batch in the feeds
        that took it (``wrote``, the failed one last)."""
        name = self._feeds[key].name
        self._failure = self._failure or (name, exc)
        for other, feed in self._feeds.items():
            try:
                if self._buffered:
                    feed.rewind(self._safe[other])
                elif feed in wrote:
                    feed.undo()
            except OSError as cut_exc:  # it keeps a torn batch, past its offset
                logger.error("feed %s: cannot cut off a torn write: %s", feed.name, cut_exc)
        self._safe = self._marks()
        self.lost += self._pending
        self._pending = 0
        return OSError(exc.errno, exc.strerror or str(exc), name)

    def offsets(self) -> dict[str, int]:
        """Each feed's byte offset for the job journal: the end of the last batch written,
        which after a failure is where the feeds were cut back to (no syscall; see
        ``sync``). Only plain files are journaled: a gzip feed's is before compression."""
        return {key: feed.position() for key, feed in self._feeds.items()}

    def sync(self) -> bool:
        """Make every feed durable (fdatasync) up to at least the ``offsets`` taken before;
        False if that cannot be trusted (a sync failed, now or before): the job journal
        must then record no later offset, nor the pages whose items lie past it."""
        if self._sync_failed:
            return False
        offsets = self.offsets()
        if offsets == self._synced:
            return True  # nothing new since the last sync
        for feed in self._feeds.values():
            try:
                feed.sync()
            except OSError as exc:
                logger.error("feed %s: cannot make it durable (fdatasync): %s", feed.name, exc)
                self._sync_failed = True
                self._failure = self._failure or (feed.name, exc)
                return False
        self._synced = offsets
        return True

    def close(self) -> None:
        """Flush and close every feed (each is closed whatever the others do).

        Raises:
            OSError: a feed could not be flushed or ended (see the class); the first
                failure, with that feed's name.
        """
        first: OSError | None = None
        try:
            self.flush()
        except OSError as exc:
            first = exc
        for feed in self._feeds.values():
            try:
                feed.close()
            except OSError as exc:  # the others are still closed
                self._failure = self._failure or (feed.name, exc)
                first = first or OSError(exc.errno, exc.strerror or str(exc), feed.name)
        if first is not None:
            raise first
