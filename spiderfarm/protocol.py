"""The words both ends of ``exchange`` share: what a worker and the server send each other.

Everything crosses the manager as plain tuples (a named tuple pickles several times
slower, and an exchange carries thousands of them):

* a **wire request** (``WireRequest``): ``Request.to_wire()``, read by the ``W_*`` indices;
* a **push entry** ``(fingerprint, politeness key, wire)``: a request for the frontier;
* a **lease** ``(lease_id, attempt, wire)``: a request handed to one worker;
* an **outcome** ``(lease_id, kind, reason, new requests, items, info)``: what became of
  a lease. ``kind`` is a ``Kind``; ``info`` is ``(status, latency_s, retry_after_s)``, or
  ``(status, latency_s, retry_after_s, final_fp)`` for a page reached through redirects
  (``final_fp``: the fingerprint of the URL it ended at, deduplicated like a request);
  items are JSON lines. ``reason`` is, by kind: the failure code (``fail``/``retry``,
  optionally followed by ``|`` and the errback's notes), the ``CloseSpider`` reason
  (``close``), the robots.txt verdict (``robots``), or the page's notes (``ok``/``skip``).

Notes are counters a worker noted on one page, ``callback_error,items/dropped*20``
(``join_notes`` writes them, ``read_notes`` reads them). ``REASONS`` is the one table of
failure codes: which are retried and which say the host did not answer.

Sessions: a worker sends the **cookie changes** its responses made (``CookieChange``) in
the same ``exchange``, and is sent the whole jar (``JarUpdates``) of each jar it leases
or holds whose version it lacks. A cookie is plain data in aiohttp's ``CookieJar.save``
form (``CookieData``); a jar maps ``"domain|path"`` to names to cookies (``JarData``).

The service's name and the methods workers may call are here too (``SERVICE``,
``EXPOSED``); the checks of a worker's call live in ``security.check_exchange``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, Literal

__all__ = [
    "CLOSING",
    "CONNECTION_FAILURES",
    "EXPOSED",
    "FINISHED",
    "KINDS",
    "META_COOKIES",
    "NO_INFO",
    "REASONS",
    "RETRYABLE_REASONS",
    "RUNNING",
    "SERVICE",
    "W_BODY",
    "W_CALLBACK",
    "W_DEPTH",
    "W_DONT_FILTER",
    "W_META",
    "W_METHOD",
    "W_PRIORITY",
    "W_URL",
    "CookieChange",
    "CookieData",
    "Info",
    "JarData",
    "JarId",
    "JarUpdates",
    "Kind",
    "Lease",
    "Outcome",
    "PushEntry",
    "Reason",
    "State",
    "WireRequest",
    "jar_of",
    "join_notes",
    "read_notes",
    "retries_allowed",
    "split_errback_notes",
    "with_errback_notes",
]

# url, callback, method, headers, body, meta, priority, dont_filter, cb_kwargs, depth, errback
WireRequest = tuple[
    str,
    str | None,
    str,
    dict[str, str] | None,
    bytes | None,
    dict[str, Any] | None,
    int,
    bool,
    dict[str, Any] | None,
    int,
    str | None,
]
# Final ints let the type checker see which field of the tuple each index reads.
W_URL: Final = 0
W_CALLBACK: Final = 1
W_METHOD: Final = 2
W_BODY: Final = 4
W_META: Final = 5
W_PRIORITY: Final = 6
W_DONT_FILTER: Final = 7
W_DEPTH: Final = 9

#: ``ok`` (fetched and parsed), ``skip`` (done, not fetched: a middleware ignored or
#: replaced it), ``close`` (a callback raised CloseSpider), ``fail`` (for good),
#: ``retry`` (worth another attempt), ``release`` (handed back unstarted), ``robots``
#: (a robots.txt fetched for the frontier).
Kind = Literal["ok", "skip", "close", "fail", "retry", "release", "robots"]
KINDS: Final[frozenset[str]] = frozenset(
    {"ok", "skip", "close", "fail", "retry", "release", "robots"}
)

PushEntry = tuple[int, str, WireRequest]
Lease = tuple[int, int, WireRequest]  # lease_id, attempt, wire
# status, latency_s, retry_after_s[, final_fp: where a page's redirects ended]
Info = tuple[int, float, float] | tuple[int, float, float, int]
Outcome = tuple[int, Kind, str, list[PushEntry], list[str], Info]
NO_INFO: Final[Info] = (0, 0.0, 0.0)

#: The crawl's state, as every exchange answers it.
State = Literal["running", "closing", "finished"]
RUNNING: Final = "running"
CLOSING: Final = "closing"
FINISHED: Final = "finished"

#: The meta key ``Request(cookies=...)`` travels under (the wire request has no field of its
#: own for them: a request without cookies pays nothing).
META_COOKIES: Final = "_cookies"

#: ``meta["cookiejar"]``: which session a request belongs to (None: the crawl's default).
JarId = str | int | None
#: One cookie, as aiohttp's ``CookieJar.save`` writes it: ``key``, ``value``,
#: ``coded_value``, the attributes set (``path``, ``domain``, ``secure``, ``httponly``,
#: ``samesite`` ...), ``host_only`` and ``expires_timestamp`` (seconds since the epoch).
CookieData = dict[str, str | bool | float]
#: A jar: ``"domain|path"`` -> cookie name -> cookie.
JarData = dict[str, dict[str, CookieData]]
#: A change one response made to a jar: (jar, "domain|path", name, cookie or None: deleted).
CookieChange = tuple[JarId, str, str, CookieData | None]
#: What a worker is sent: jar -> (version, the whole jar).
JarUpdates = dict[JarId, tuple[int, JarData]]


def jar_of(meta: dict[str, Any] | None) -> JarId:
    """The jar a request's meta names (None, the default jar, for anything else)."""
    if not meta:
        return None
    jar = meta.get("cookiejar")
    return jar if type(jar) is str or type(jar) is int else None


def retries_allowed(meta: dict[str, Any] | None, default: int) -> int:
    """How many retries a request may have: ``meta["dont_retry"]`` (none) and
    ``meta["max_retry_times"]`` (Scrapy's names) over the ``max_retries`` setting."""
    if not meta:
        return default
    if meta.get("dont_retry"):
        return 0
    times = meta.get("max_retry_times")
    return times if type(times) is int and times >= 0 else default


SERVICE: Final = "frontier"
EXPOSED: Final = ("hello", "exchange", "heartbeat", "status", "bye")


class Reason:
    """How a failure code behaves: whether it is retried, and whether it means the host
    did not answer (which backs the host off)."""

    __slots__ = ("connection", "retryable")

    def __init__(self, retryable: bool, connection: bool) -> None:
        self.retryable, self.connection = retryable, connection


#: The fetch failures (HTTP statuses, ``http_<status>``, are decided by settings).
REASONS: Final[dict[str, Reason]] = {
    "timeout": Reason(retryable=True, connection=True),
    "refused": Reason(retryable=True, connection=True),
    "connect_error": Reason(retryable=True, connection=True),
    "dns_error": Reason(retryable=True, connection=True),
    "disconnected": Reason(retryable=True, connection=True),
    "network_error": Reason(retryable=True, connection=True),
    "truncated": Reason(retryable=True, connection=False),  # it answered, then stopped
    "too_large": Reason(retryable=False, connection=False),
    "too_many_redirects": Reason(retryable=False, connection=False),
    "bad_redirect": Reason(retryable=False, connection=False),
    "tls_error": Reason(retryable=False, connection=False),
    "bad_response": Reason(retryable=False, connection=False),
    "bad_encoding": Reason(retryable=False, connection=False),
    "bad_request": Reason(retryable=False, connection=False),
}
#: Network failures worth another attempt.
RETRYABLE_REASONS: Final = frozenset(code for code, r in REASONS.items() if r.retryable)
#: Failures that say the host did not answer (not that it served something bad).
CONNECTION_FAILURES: Final = frozenset(code for code, r in REASONS.items() if r.connection)

#: The most a note's count may add to a counter (a hostile worker cannot inflate stats).
_MAX_NOTE_COUNT = 1_000_000


def join_notes(notes: list[str]) -> str:
    """Notes as the frontier reads them: each name once, in order of first appearance,
    with a count when repeated (``items/dropped*20,callback_error``), so that a page's
    notes stay far below the server's cap on a reason's length."""
    if len(notes) < 2:
        return notes[0] if notes else ""
    counts = dict.fromkeys(notes, 0)
    for note in notes:
        counts[note] += 1
    return ",".join(note if n == 1 else f"{note}*{n}" for note, n in counts.items())


def read_notes(notes: str) -> Iterator[tuple[str, int]]:
    """``(counter, count)`` for each note; a bare name counts as ``errors/<name>``."""
    for note in notes.split(","):
        name, _, times = note.partition("*")
        count = int(times) if times.isdigit() else 1
        yield (name if "/" in name else f"errors/{name}"), min(count, _MAX_NOTE_COUNT)


def with_errback_notes(reason: str, notes: list[str]) -> str:
    """A failure's reason with its errback's notes after it: ``http_404|callback_error``."""
    joined = join_notes(notes)
    return f"{reason}|{joined}" if joined else reason


def split_errback_notes(reason: str) -> tuple[str, str]:
    """``(failure code, notes)`` of a ``fail``/``retry`` outcome's reason."""
    code, _, notes = reason.partition("|")
    return code, notes
