"""Feed exporters: item lines (JSON, as the workers encode them) to the bytes of one
format, written to one binary output (a file, standard output, or gzip over a file).

``JsonLinesFeed`` without fields writes the workers' lines as they came (no parsing);
``JsonArrayFeed`` wraps them in an array; ``CsvFeed`` decodes them, as does any feed with
``fields`` (Scrapy's ``FEED_EXPORT_FIELDS``: only those keys, in that order).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from typing import IO, Any, Protocol

logger = logging.getLogger(__name__)

__all__ = ["CsvFeed", "FileFeed", "GzipOutput", "JsonArrayFeed", "JsonLinesFeed", "Output"]


class Output(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


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
        self._put(prefix)

    def _encode(self, lines: list[str]) -> tuple[bytes, int]:
        raise NotImplementedError

    def _put(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._pos += len(data)  # only once written: a failed write is not counted

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        data, n = self._encode(lines)
        self._put(data)
        self.count += n
        self._wrote(n)

    def _wrote(self, n: int) -> None:
        pass

    def flush(self) -> None:
        self._out.flush()

    def position(self) -> int:
        """The byte position after the last item written (before compression)."""
        return self._pos

    def offset(self) -> int:
        """Flush, and return the byte position every written item now lies before."""
        self._out.flush()
        return self._pos

    def _finish(self) -> bytes:
        return b""

    def close(self) -> None:
        try:
            self._put(self._finish())
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


class GzipOutput:
    """A new gzip member at the end of ``fh`` (gzip -dc and Python read several members
    as one stream); closing it closes ``fh`` too."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._gz = gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=6)

    def write(self, data: bytes) -> int:
        return self._gz.write(data)

    def flush(self) -> None:
        self._gz.flush()  # a sync flush: what is written so far decompresses

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._fh.close()
