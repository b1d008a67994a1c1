"""What a feed is: a ``-o``/``-O`` argument read as a ``FeedSpec`` (``FILE``,
``FILE:FORMAT``, ``-:FORMAT``), the formats' names, and ``FeedSink``, what an open feed does."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..errors import FeedError
from ..exporters import FeedMark

__all__ = ["FEED_FORMATS", "STDOUT", "FeedFormat", "FeedSink", "FeedSpec", "as_feed_specs"]

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
