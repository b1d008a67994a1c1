"""Item feeds: one output file per crawl, its format chosen by extension.

Workers send items already encoded as JSON lines, so the ``.jsonl`` feed is a plain
append; ``.json`` wraps the same lines in an array; ``.csv`` decodes them and takes its
columns from the first item (later keys outside those columns are counted, not written).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import IO, Protocol

from .errors import FeedError

logger = logging.getLogger(__name__)

__all__ = ["FEED_FORMATS", "FeedSink", "open_feed"]


class FeedSink(Protocol):
    path: Path
    count: int

    def write(self, lines: list[str]) -> None: ...
    def flush(self) -> None: ...
    def offset(self) -> int: ...
    def close(self) -> None: ...


class _JsonLinesFeed:
    def __init__(self, path: Path, fh: IO[str]) -> None:
        self.path, self._fh, self.count = path, fh, 0

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        self._fh.write("\n".join(lines))
        self._fh.write("\n")
        self.count += len(lines)

    def flush(self) -> None:
        self._fh.flush()

    def offset(self) -> int:
        """Flush, and return the byte position every written item now lies before."""
        self._fh.flush()
        return self._fh.buffer.tell() if hasattr(self._fh, "buffer") else self._fh.tell()

    def close(self) -> None:
        self._fh.close()


class _JsonArrayFeed(_JsonLinesFeed):
    def __init__(self, path: Path, fh: IO[str]) -> None:
        super().__init__(path, fh)
        fh.write("[")

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        sep = ",\n" if self.count else "\n"
        self._fh.write(sep + ",\n".join(lines))
        self.count += len(lines)

    def close(self) -> None:
        self._fh.write("\n]\n" if self.count else "]\n")
        self._fh.close()


class _CsvFeed(_JsonLinesFeed):
    def __init__(self, path: Path, fh: IO[str]) -> None:
        super().__init__(path, fh)
        self._writer: csv.DictWriter[str] | None = None
        self.extra_keys = 0

    def write(self, lines: list[str]) -> None:
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if not isinstance(item, dict):  # workers send JSON objects; never crash on one
                logger.error("CSV feed %s: skipping an item that is not a JSON object", self.path)
                continue
            if self._writer is None:
                self._writer = csv.DictWriter(
                    self._fh, fieldnames=list(item), extrasaction="ignore", lineterminator="\n"
                )
                self._writer.writeheader()
            extra = item.keys() - set(self._writer.fieldnames)
            if extra:
                if not self.extra_keys:
                    logger.warning(
                        "CSV feed %s: columns come from the first item; dropping fields %s",
                        self.path,
                        sorted(extra),
                    )
                self.extra_keys += 1
            self._writer.writerow(
                {
                    k: v if isinstance(v, str | int | float) or v is None else json.dumps(v)
                    for k, v in item.items()
                }
            )
            self.count += 1


FEED_FORMATS = {
    ".jsonl": _JsonLinesFeed,
    ".jl": _JsonLinesFeed,
    ".json": _JsonArrayFeed,
    ".csv": _CsvFeed,
}


def open_feed(path: str | os.PathLike[str], resume_at: int | None = None) -> FeedSink:
    """Open the feed at ``path``; the extension picks the format.

    With ``resume_at`` (a resumed job), the feed is cut back to that byte offset — the end
    of the last items the job journal recorded — and appended to.

    Raises:
        FeedError: unknown extension, or the file cannot be created or written.
    """
    p = Path(path)
    kind = FEED_FORMATS.get(p.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(FEED_FORMATS))
        raise FeedError(f"cannot tell the feed format of {str(p)!r}: use one of {known}")
    if resume_at is not None and kind is not _JsonLinesFeed:
        raise FeedError(
            f"feed {str(p)!r}: a resumed crawl (--job-dir) needs a .jsonl feed, which it "
            "can append to; convert to JSON or CSV afterwards"
        )
    try:
        if resume_at is not None:
            with p.open("ab") as raw:  # creates it if it went missing
                size = raw.seek(0, os.SEEK_END)
                if size > resume_at:
                    raw.truncate(resume_at)
                elif size < resume_at:
                    logger.warning(
                        "feed %s is shorter than the job journal recorded (%d < %d bytes): "
                        "items of the earlier run are missing from it",
                        p,
                        size,
                        resume_at,
                    )
        fh = p.open(
            "w" if resume_at is None else "a", encoding="utf-8", newline="", buffering=1 << 16
        )
    except OSError as exc:
        raise FeedError(
            f"cannot write the feed {str(p)!r}: {exc.strerror}; choose a writable path with -o"
        ) from None
    return kind(p, fh)


class NullFeed:
    """Counts items when no ``-o`` was given."""

    def __init__(self) -> None:
        self.path, self.count = Path(os.devnull), 0

    def write(self, lines: list[str]) -> None:
        self.count += len(lines)

    def flush(self) -> None:
        pass

    def offset(self) -> int:
        return self.count

    def close(self) -> None:
        pass
