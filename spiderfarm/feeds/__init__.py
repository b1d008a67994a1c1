"""Item feeds: the files (or standard output) the server writes items to.

A ``FeedSpec`` (``spec.py``) is one ``-o``/``-O`` argument (``FILE``, ``FILE:FORMAT``,
``-:FORMAT``); ``open_feeds`` opens all of them (``opening.py``: appending, overwriting or
resuming each, and checking every one before it changes any) as one ``FeedSet``, which
writes each batch of items to every feed and reports the byte offsets the job journal
records. The formats themselves are in ``exporters.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import FeedError
from ..exporters import FeedMark
from .opening import Opened, cannot_write, open_feed, open_file, start
from .spec import FEED_FORMATS, FeedSink, FeedSpec, as_feed_specs

logger = logging.getLogger(__name__)

__all__ = [
    "FEED_FORMATS",
    "FeedSet",
    "FeedSink",
    "FeedSpec",
    "as_feed_specs",
    "open_feed",
    "open_feeds",
]


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
    opened: list[Opened] = []
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
            opened.append(open_file(spec, resume_at, fields))
        for item in opened:
            try:
                feeds[item.spec.key] = start(item, fields)
            except OSError as exc:
                raise cannot_write(item.spec, exc) from None
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
