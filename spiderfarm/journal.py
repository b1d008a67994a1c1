"""Persistence of the frontier in SQLite (WAL), so a crawl resumes after a crash or stop.

The frontier records what changed (requests added, done, retried, dead-lettered); a
committer thread writes those changes in one transaction together with each feed's byte
offset at that instant. On resume every feed is cut back to its offset, so each holds the
items of exactly the requests the journal calls done: nothing twice, nothing lost.
"""

from __future__ import annotations

import json
import logging
import pickle
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpiderfarmError
from .protocol import W_DONT_FILTER, W_URL

logger = logging.getLogger(__name__)

__all__ = ["Journal", "JournalState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    rid INTEGER PRIMARY KEY, fp INTEGER NOT NULL, host TEXT NOT NULL, wire BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS dead_letters (
    rid INTEGER PRIMARY KEY, url TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Made on first use, so that a crawl without redirect dedups or cookies has the job dir
#: it always had (a table costs pages a nearly full disk may not have).
_LAZY = {
    "seen": "CREATE TABLE IF NOT EXISTS seen (fp INTEGER PRIMARY KEY)",
    "jars": "CREATE TABLE IF NOT EXISTS jars (jar BLOB PRIMARY KEY, cookies BLOB NOT NULL)",
    "roots": "CREATE TABLE IF NOT EXISTS roots (rid INTEGER PRIMARY KEY, root TEXT NOT NULL)",
}
_ADD = "INSERT INTO requests (rid, fp, host, wire) VALUES (?, ?, ?, ?)"
_ATTEMPT = "UPDATE requests SET attempt = ? WHERE rid = ?"
_DONE = "UPDATE requests SET done = 1 WHERE rid = ?"
_DEAD = "INSERT OR REPLACE INTO dead_letters (rid, url, reason, attempts) VALUES (?, ?, ?, ?)"
_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_ROOT = "INSERT OR REPLACE INTO roots (rid, root) VALUES (?, ?)"
_SEEN = "INSERT OR IGNORE INTO seen (fp) VALUES (?)"
_JAR = "INSERT OR REPLACE INTO jars (jar, cookies) VALUES (?, ?)"

#: A commit that fails with one of these (disk full, an I/O error, a locked database) is
#: not any op's fault: nothing is written, and the same ops are committed again later.
#: Any other failure (OverflowError, a RecursionError while pickling, an IntegrityError,
#: ...) is some op's own: that op is skipped and the others are written.
_TRANSIENT = (sqlite3.OperationalError, MemoryError)
_MAX_SKIP_LOGS = 20
_WHAT = {
    "add": "the new request",
    "done": "the end of",
    "attempt": "the retry count of",
    "dead": "the dead letter",
    "root": "the submitted URL behind",
    "seen": "where a redirect ended, for",
    "jar": "a cookie jar, for",
}
_SKIPPED = {
    "add": "a resumed crawl will not have it",
    "done": "a resumed crawl fetches it again",
    "attempt": "a resumed crawl counts its attempts from the last one written",
    "dead": "a resumed crawl fetches it again",
    "root": "a resumed crawl gives no result for it",
    "seen": "a resumed crawl may fetch that page again",
    "jar": "a resumed crawl has that jar as of its last commit",
}


@dataclass(slots=True)
class JournalState:
    """What a job directory holds: enough to rebuild the frontier."""

    meta: dict[str, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    dead_letters: list[tuple[str, str, int]] = field(default_factory=list)
    next_rid: int = 1

    @property
    def feed_offsets(self) -> dict[str, int]:
        """Each feed's byte offset, by absolute path (``meta["feeds"]``, a JSON object)."""
        if "feeds" in self.meta:
            return {str(k): int(v) for k, v in json.loads(self.meta["feeds"]).items()}
        # A job dir written before there could be several feeds: one path and its offset.
        path = self.meta.get("feed_path", "")
        return {path: int(self.meta.get("feed_offset", "0"))} if path else {}


class Journal:
    """One job directory's SQLite database. Writes come from a single committer thread."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / "frontier.sqlite3"
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SpiderfarmError(f"cannot use job dir {str(directory)!r}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def load(self) -> JournalState | None:
        """The saved state, or None for a new job directory."""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            return None
        state = JournalState(meta=meta, stats=json.loads(meta.get("stats", "{}")))
        state.dead_letters = [
            (url, reason, attempts)
            for url, reason, attempts in self._db.execute(
                "SELECT url, reason, attempts FROM dead_letters ORDER BY rid"
            )
        ]
        (last,) = self._db.execute("SELECT COALESCE(MAX(rid), 0) FROM requests").fetchone()
        state.next_rid = last + 1
        return state

    def fingerprints(self) -> Iterator[int]:
        """The seen set: fingerprints of the requests added, but not of ``dont_filter``
        ones, which a live crawl does not mark seen either (stored as fp 0)."""
        for (fp,) in self._db.execute("SELECT fp FROM requests WHERE fp != 0"):
            yield fp
        if self._has("seen"):  # where redirects ended
            for (fp,) in self._db.execute("SELECT fp FROM seen"):
                yield fp

    def jars(self) -> Iterator[tuple[Any, Any]]:
        """The cookie jars: (jar id, its cookies), as the frontier keeps them."""
        if self._has("jars"):
            for jar, cookies in self._db.execute("SELECT jar, cookies FROM jars"):
                yield pickle.loads(jar), pickle.loads(cookies)

    def _has(self, table: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return row is not None

    def _make(self, table: str) -> None:
        """Create a lazy table (inside the caller's transaction)."""
        self._db.execute(_LAZY[table])

    def queued(self) -> Iterator[tuple[int, str, Any, int]]:
        """Requests not done, in the order they were first queued (leased ones included:
        a lease does not survive a restart)."""
        rows = self._db.execute(
            "SELECT rid, host, wire, attempt FROM requests WHERE done = 0 ORDER BY rid"
        )
        for rid, host, wire, attempt in rows:
            yield rid, host, pickle.loads(wire), attempt

    def roots(self) -> Iterator[tuple[int, str]]:
        """Service mode: the submitted URL each request not done descends from."""
        if self._has("roots"):
            yield from self._db.execute(
                "SELECT roots.rid, roots.root FROM roots JOIN requests USING (rid) "
                "WHERE requests.done = 0"
            )

    def commit(self, ops: list[tuple[Any, ...]], meta: dict[str, str]) -> int:
        """Write ``ops`` and ``meta`` in one transaction; returns how many ops were skipped.

        An op that cannot be written (a fingerprint too large for SQLite's INTEGER, a
        request that does not pickle, ...) is logged with its request's URL and skipped,
        and the others are written: one bad op must not fail every later commit.

        Raises:
            sqlite3.OperationalError: the disk is full, say; nothing was written, so
                commit the same ops (and any made since) again later.
        """
        try:
            self._commit_all(ops, meta)
            return 0
        except _TRANSIENT:
            raise
        except Exception:  # some op's own fault: find it and write the others
            return self._commit_each(ops, meta)

    def _commit_all(self, ops: list[tuple[Any, ...]], meta: dict[str, str]) -> None:
        adds, dones, attempts, dead, roots, seen, jars = [], [], [], [], [], [], []
        for op in ops:
            kind = op[0]
            if kind == "add":
                _, rid, fp, host, wire = op
                blob = pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)
                adds.append((rid, 0 if wire[W_DONT_FILTER] else fp, host, blob))
            elif kind == "done":
                dones.append((op[1],))
            elif kind == "attempt":
                attempts.append((op[2], op[1]))
            elif kind == "root":
                roots.append(op[1:])
            elif kind == "seen":
                seen.append((op[1],))
            elif kind == "jar":
                jars.append(_jar_row(op))
            else:  # dead
                dones.append((op[1],))
                dead.append(op[1:])
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(_ADD, adds)
            db.executemany(_ATTEMPT, attempts)
            db.executemany(_DONE, dones)
            db.executemany(_DEAD, dead)
            if roots:
                self._make("roots")
                db.executemany(_ROOT, roots)
            if seen:
                self._make("seen")
                db.executemany(_SEEN, seen)
            if jars:
                self._make("jars")
                db.executemany(_JAR, jars)
            db.executemany(_META, list(meta.items()))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _commit_each(self, ops: list[tuple[Any, ...]], meta: dict[str, str]) -> int:
        """The slow way, after a failed commit: each op in a savepoint of its own."""
        db = self._db
        skipped = 0
        db.execute("BEGIN")
        try:
            for op in ops:
                db.execute("SAVEPOINT op")
                try:
                    self._write(op)
                except _TRANSIENT:
                    raise
                except Exception as exc:
                    db.execute("ROLLBACK TO op")
                    skipped += 1
                    if skipped <= _MAX_SKIP_LOGS:
                        logger.error(
                            "job journal: cannot write %s (%s: %s); skipped it, so %s",
                            self._describe(op), type(exc).__name__, exc, _SKIPPED.get(op[0], "?"),
                        )  # fmt: skip
                db.execute("RELEASE op")
            db.executemany(_META, list(meta.items()))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        if skipped > _MAX_SKIP_LOGS:
            logger.error("job journal: skipped %d changes in all in one commit", skipped)
        return skipped

    def _write(self, op: tuple[Any, ...]) -> None:
        db = self._db
        kind = op[0]
        if kind == "add":
            _, rid, fp, host, wire = op
            blob = pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)
            db.execute(_ADD, (rid, 0 if wire[W_DONT_FILTER] else fp, host, blob))
        elif kind == "done":
            db.execute(_DONE, (op[1],))
        elif kind == "attempt":
            db.execute(_ATTEMPT, (op[2], op[1]))
        elif kind == "root":
            self._make("roots")
            db.execute(_ROOT, op[1:])
        elif kind == "seen":
            self._make("seen")
            db.execute(_SEEN, (op[1],))
        elif kind == "jar":
            self._make("jars")
            db.execute(_JAR, _jar_row(op))
        else:  # dead
            db.execute(_DONE, (op[1],))
            db.execute(_DEAD, op[1:])

    def _describe(self, op: tuple[Any, ...]) -> str:
        """The op, named by its request's URL (escaped: it may be what cannot be written)."""
        kind, rid = op[0], op[1]
        if kind in ("seen", "jar"):
            return f"{_WHAT[kind]} {rid!r:.60}"
        url: Any = None
        try:
            if kind == "add":
                url = op[4][W_URL]
            elif kind == "dead":
                url = op[2]
            else:
                row = self._db.execute("SELECT wire FROM requests WHERE rid = ?", (rid,))
                found = row.fetchone()
                url = pickle.loads(found[0])[W_URL] if found else None
        except Exception:
            url = None
        what = _WHAT.get(kind, kind)
        if not isinstance(url, str):
            return f"{what} request {rid!r:.30}"
        return f"{what} {url if url.isascii() else ascii(url)}"


def _jar_row(op: tuple[Any, ...]) -> tuple[bytes, bytes]:
    _, jar, cookies = op
    return (
        pickle.dumps(jar, protocol=pickle.HIGHEST_PROTOCOL),
        pickle.dumps(cookies, protocol=pickle.HIGHEST_PROTOCOL),
    )


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (it does on some disk-full and I/O errors): a
    # second ROLLBACK would fail and hide the error that says what happened.
    if db.in_transaction:
        db.execute("ROLLBACK")
