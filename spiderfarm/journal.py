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
from .http import W_DONT_FILTER

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

    def queued(self) -> Iterator[tuple[int, str, Any, int]]:
        """Requests not done, in the order they were first queued (leased ones included:
        a lease does not survive a restart)."""
        rows = self._db.execute(
            "SELECT rid, host, wire, attempt FROM requests WHERE done = 0 ORDER BY rid"
        )
        for rid, host, wire, attempt in rows:
            yield rid, host, pickle.loads(wire), attempt

    def commit(self, ops: list[tuple[Any, ...]], meta: dict[str, str]) -> None:
        adds, dones, attempts, dead = [], [], [], []
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
            else:  # dead
                dones.append((op[1],))
                dead.append(op[1:])
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO requests (rid, fp, host, wire) VALUES (?, ?, ?, ?)", adds)
            db.executemany("UPDATE requests SET attempt = ? WHERE rid = ?", attempts)
            db.executemany("UPDATE requests SET done = 1 WHERE rid = ?", dones)
            db.executemany(
                "INSERT OR REPLACE INTO dead_letters (rid, url, reason, attempts) "
                "VALUES (?, ?, ?, ?)",
                dead,
            )
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items())
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a COMMIT that failed (disk full) may have rolled back
                db.execute("ROLLBACK")
            raise
