"""Feed exporters: item lines (JSON, as the workers encode them) to the bytes of one
format, written to one binary output (a file, standard output, or gzip over a file).

``JsonLinesFeed`` without fields writes the workers' lines as they came (no parsing);
``JsonArrayFeed`` wraps them in an array; ``CsvFeed`` decodes them, as does any feed with
``fields`` (Scrapy's ``FEED_EXPORT_FIELDS``: only those keys, in that order).

Nothing is buffered in this process, except in a gzip compressor: when a feed's ``write``
returns, its bytes are in the file (the kernel's page cache, which outlives a ``kill -9``);
when it raises (a full disk), the file may end in a torn write, which ``rewind`` cuts off.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import IO, Any, Protocol

logger = logging.getLogger(__name__)

__all__ = [
    "CsvFeed",
    "FeedMark",
    "FileFeed",
    "FileOutput",
    "GzipOutput",
    "JsonArrayFeed",
    "JsonLinesFeed",
    "Output",
]

_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class Output(Protocol):
    """Where a feed's bytes go. ``write`` puts all of ``data`` in the file or raises
    OSError; ``tell`` is where the last whole write ends in the file (gzip: the last flush),
    and ``cut`` goes back to such a place after a failure."""

    def write(self, data: bytes, /) -> None: ...
    def flush(self) -> None: ...
    def tell(self) -> int: ...
    def cut(self, at: int, /) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class FileOutput:
    """Bytes straight to a file descriptor, with no buffer in this process: a ``write``
    that returns has put every byte in the file; one that raises may leave a part of them,
    past ``tell()``, for ``cut`` to remove."""

    def __init__(self, fh: IO[bytes], size: int, *, cuttable: bool = True) -> None:
        """``size``: the file's length now (writes append); ``cuttable``: a regular file
        of ours, which ``cut`` may truncate (not standard output)."""
        self._fh, self._fd = fh, fh.fileno()
        self._size, self.cuttable = size, cuttable

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # os.write may take part of it (a signal, a nearly full disk)
            view = view[os.write(self._fd, view) :]
        self._size += len(data)  # only once all of it is in: a failed write is not counted

    def flush(self) -> None:
        pass  # nothing is held back

    def tell(self) -> int:
        return self._size

    def cut(self, at: int) -> None:
        """Truncate the file to ``at``, dropping what a failed write left after it."""
        if self.cuttable:
            os.ftruncate(self._fd, at)
        self._size = at

    def sync(self) -> None:
        """Make what was written durable (fdatasync): it then survives a power loss too, and
        a file system that reports a full disk only now (NFS, say) reports it here."""
        if self.cuttable:
            _fdatasync(self._fd)

    def close(self) -> None:
        self._fh.close()


class GzipOutput:
    """A new gzip member at the end of a file (gzip -dc and Python read several members
    as one stream). ``flush`` is a sync flush: what was written up to it decompresses.
    Closing it closes the file too."""

    def __init__(self, out: FileOutput) -> None:
        """Raises:
        OSError: the gzip header cannot be written."""
        self._out = out
        self._z: Any = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate
        self._crc = self._size = 0
        self._dirty = False
        # magic, deflate, no flags, mtime, no extra flags, unknown OS: as gzip.GzipFile does
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", int(time.time())) + b"\x00\xff")
        self._flushed = (out.tell(), 0, 0)  # (file size, crc, length) at the last flush

    def write(self, data: bytes) -> None:
        if self._z is None:
            raise ValueError("write to a gzip member that has ended")
        self._crc, self._size = zlib.crc32(data, self._crc), self._size + len(data)
        self._dirty = True
        packed = self._z.compress(data)
        if packed:
            self._out.write(packed)

    def flush(self) -> None:
        if self._z is None or not self._dirty:
            return
        self._out.write(self._z.flush(zlib.Z_SYNC_FLUSH))
        self._flushed, self._dirty = (self._out.tell(), self._crc, self._size), False

    def tell(self) -> int:
        return self._flushed[0]

    def cut(self, at: int) -> None:
        """After a failure: back to the last flush, and end the member there, so that the
        file is a complete gzip file once more (if the ten bytes that takes fit; if not, it
        ends at that flush without a trailer, as after a ``kill -9``). Takes no more data."""
        end, crc, size = self._flushed
        assert at == end, "a gzip member can go back to its last flush only"
        self._z = None
        self._out.cut(end)
        if not self._out.cuttable:
            return  # standard output: what went out is gone, a trailer would not help
        try:
            # After a sync flush the stream is byte-aligned: an empty final block ends it.
            self._out.write(b"\x03\x00" + struct.pack("<II", crc, size & 0xFFFFFFFF))
        except OSError:
            self._out.cut(end)

    def sync(self) -> None:
        self._out.sync()

    def close(self) -> None:
        try:
            if self._z is not None:
                tail = self._z.flush() + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
                self._out.write(tail)
                self._z = None
        except OSError:
            self.cut(self._flushed[0])
            raise
        finally:
            self._out.close()


@dataclass(frozen=True, slots=True)
class FeedMark:
    """Where a feed stood: its byte position (before compression), where that lies in
    the file, and its item count."""

    position: int
    at: int
    count: int


class FileFeed:
    """Bytes to one binary file; subclasses turn item lines into those bytes."""

    def __init__(
        self, name: str, out: Output, start: int, fields: tuple[str, ...], prefix: bytes = b""
    ) -> None:
        """``start``: the byte position writing starts at; ``prefix``: bytes written first.

        Raises:
            OSError: the prefix cannot be written.
        """
        self.name, self.count, self.fields = name, 0, fields
        self._out, self._pos = out, start
        self._finishes = True  # close() ends the format (a JSON array's "]")
        self._before = (start, out.tell(), 0)  # where the last write began
        self._put(prefix)

    def _encode(self, lines: list[str]) -> tuple[bytes, int]:
        raise NotImplementedError

    def _put(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._pos += len(data)  # only once written: a failed write is not counted

    def write(self, lines: list[str]) -> None:
        """Write the items, all of them or (raising OSError) none: after a failure the
        file may end in a part of them, until ``rewind``."""
        if not lines:
            return
        self._before = (self._pos, self._out.tell(), self.count)  # for ``undo``
        data, n = self._encode(lines)
        self._put(data)
        self.count += n
        self._wrote(n)

    def _wrote(self, n: int) -> None:
        pass

    @property
    def buffered(self) -> bool:
        """Whether written items may still be in memory (a gzip feed's, until ``flush``)."""
        return isinstance(self._out, GzipOutput)

    def flush(self) -> None:
        self._out.flush()

    def position(self) -> int:
        """The byte position after the last item written (before compression)."""
        return self._pos

    def offset(self) -> int:
        """The byte position every written item lies before (nothing is held back, so
        the file holds them all; ``sync`` makes them durable)."""
        return self._pos

    def mark(self) -> FeedMark:
        """Where the feed stands now, to ``rewind`` to (for a gzip feed, only after a
        ``flush``)."""
        return FeedMark(self._pos, self._out.tell(), self.count)

    def rewind(self, mark: FeedMark) -> None:
        """After a failed write: cut the file back to ``mark``, so that it ends after a
        whole item (a gzip member is ended there, and takes nothing more).

        Raises:
            OSError: the file cannot be truncated.
        """
        if self.buffered:
            self._finishes = False
        self._pos, self.count = mark.position, mark.count
        self._out.cut(mark.at)

    def undo(self) -> None:
        """After a failed write: ``rewind`` to where the last write began (not for a
        gzip feed, which goes back to its last flush only)."""
        self.rewind(FeedMark(*self._before))

    def sync(self) -> None:
        """Make what was written durable (fdatasync).

        Raises:
            OSError: the file system cannot (a full disk it reports only now, an I/O error).
        """
        self._out.sync()

    def _finish(self) -> bytes:
        return b""

    def close(self) -> None:
        """End the format and close the file. Should the end not fit (a full disk), the
        file is cut back to its last item and OSError raised; it is closed either way."""
        try:
            if self._finishes:
                at = self._out.tell()
                try:
                    self._put(self._finish())
                except OSError:
                    self._out.cut(at)
                    raise
        finally:
            self._out.close()

    def _objects(self, lines: list[str]) -> list[dict[str, Any]]:
        items = []
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if not isinstance(item, dict):  # workers send JSON objects; never crash on one
                logger.error("feed %s: skipping an item that is not a JSON object", self.name)
                continue
            items.append(item)
        return items

    def _lines(self, lines: list[str]) -> list[str]:
        """The lines as written: re-encoded with only ``feed_fields``, in order, if set."""
        if not self.fields:
            return lines  # the fast path: the workers' JSON as it came
        return [
            json.dumps({k: item[k] for k in self.fields if k in item}, ensure_ascii=False)
            for item in self._objects(lines)
        ]


class JsonLinesFeed(FileFeed):
    def _encode(self, lines: list[str]) -> tuple[bytes, int]:
        lines = self._lines(lines)
        return ("\n".join(lines) + "\n").encode() if lines else b"", len(lines)


class JsonArrayFeed(FileFeed):
    def __init__(
        self,
        name: str,
        out: Output,
        start: int,
        fields: tuple[str, ...],
        prefix: bytes = b"",
        *,
        has_items: bool = False,
    ) -> None:
        super().__init__(name, out, start, fields, prefix)
        self._has_items = has_items  # an array reopened to append to holds items already

    def _encode(self, lines: list[str]) -> tuple[bytes, int]:
        lines = self._lines(lines)
        if not lines:
            return b"", 0
        separator = b",\n" if self._has_items else b"\n"
        return separator + ",\n".join(lines).encode(), len(lines)

    def _wrote(self, n: int) -> None:
        self._has_items = self._has_items or n > 0

    def _finish(self) -> bytes:
        return b"\n]\n" if self._has_items else b"]\n"


class CsvFeed(FileFeed):
    def __init__(
        self,
        name: str,
        out: Output,
        start: int,
        fields: tuple[str, ...],
        prefix: bytes = b"",
        *,
        header: list[str] | None = None,
    ) -> None:
        super().__init__(name, out, start, fields, prefix)
        self._text = io.StringIO()
        # Columns: feed_fields if set, else the file's own header (appending or resuming),
        # else the first item's keys.
        self._columns: list[str] | None = list(fields) if fields else header
        self._header_done = self._has_header = header is not None
        self._writer = self._make_writer() if self._columns is not None else None
        self._pending_header = self._header_done
        self.extra_keys = 0

    def _make_writer(self) -> csv.DictWriter[str]:
        assert self._columns is not None
        return csv.DictWriter(
            self._text, fieldnames=self._columns, extrasaction="ignore", lineterminator="\n"
        )

    def _encode(self, lines: list[str]) -> tuple[bytes, int]:
        n = 0
        header_done = self._header_done
        for item in self._objects(lines):
            if self._writer is None:
                self._columns = list(item)
                self._writer = self._make_writer()
            if not header_done:
                self._writer.writeheader()
                header_done = True
            extra = item.keys() - set(self._writer.fieldnames)
            if extra and not self.fields:  # feed_fields chose the columns: no surprise
                if not self.extra_keys:
                    source = "its header" if self._has_header else "the first item"
                    logger.warning(
                        "CSV feed %s: columns come from %s; dropping fields %s",
                        self.name,
                        source,
                        sorted(extra),
                    )
                self.extra_keys += 1
            self._writer.writerow(
                {
                    k: v if isinstance(v, str | int | float) or v is None else json.dumps(v)
                    for k, v in item.items()
                }
            )
            n += 1
        data = self._text.getvalue().encode()
        self._text.seek(0)
        self._text.truncate()
        self._pending_header = header_done
        return data, n

    def _wrote(self, n: int) -> None:
        self._header_done = self._pending_header
