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
(``join_notes`` writes them, ``read_notes`` reads them), and the spider's own stats
(``spider.stats``) riding with it: ``$`` + an operation (``StatOp``) + the key, percent-
encoded, + ``:`` + the number (``$+pages_seen:3,$>max_price:19.5``; ``stat_note`` writes
one, ``read_stat_notes`` reads them). ``REASONS`` is the one table of
failure codes: which are retried and which say the host did not answer.

Sessions: a worker sends the **cookie changes** its responses made (``CookieChange``) in
the same ``exchange``, and is sent the whole jar (``JarUpdates``) of each jar it leases
or holds whose version it lacks. A cookie is plain data in aiohttp's ``CookieJar.save``
form (``CookieData``); a jar maps ``"domain|path"`` to names to cookies (``JarData``).

The service's name and the methods workers may call are here too (``SERVICE``,
``EXPOSED``), and so are the caps on one call and ``check_exchange``, which the server
applies to every call before the frontier sees it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal, cast
from urllib.parse import quote, unquote

from .urls import MAX_URL_LENGTH

__all__ = [
    "CLOSING",
    "CONNECTION_FAILURES",
    "EXPOSED",
    "FINISHED",
    "INT64_MAX",
    "INT64_MIN",
    "KINDS",
    "MAX_BATCH",
    "MAX_COOKIES_PER_JAR",
    "MAX_COOKIE_BYTES",
    "MAX_COOKIE_CHANGES",
    "MAX_COOKIE_STORE_BYTES",
    "MAX_ITEM_BYTES",
    "MAX_JARS",
    "MAX_LINKS_PER_PAGE",
    "MAX_NESTING",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_VALUES",
    "MAX_SPIDER_STATS",
    "MAX_STAT_KEY_CHARS",
    "MAX_STAT_NOTES_CHARS",
    "META_COOKIES",
    "NO_INFO",
    "REASONS",
    "RETRYABLE_REASONS",
    "RUNNING",
    "SERVICE",
    "STAT_OPS",
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
    "StatOp",
    "State",
    "WireRequest",
    "check_cookie_changes",
    "check_exchange",
    "check_request_fields",
    "cookie_size",
    "jar_of",
    "join_notes",
    "read_notes",
    "read_stat_notes",
    "retries_allowed",
    "split_errback_notes",
    "stat_note",
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
    """``(counter, count)`` for each note; a bare name counts as ``errors/<name>``.
    Spider stats (``$...``) are not counters: ``read_stat_notes`` reads them."""
    for note in notes.split(","):
        if note[:1] == "$":
            continue
        name, _, times = note.partition("*")
        count = int(times) if times.isdigit() else 1
        yield (name if "/" in name else f"errors/{name}"), min(count, _MAX_NOTE_COUNT)


#: How a spider stat combines farm-wide: ``+`` adds (``inc_value``), ``=`` replaces
#: (``set_value``: the last writer wins), ``>``/``<`` keeps the larger/smaller
#: (``max_value``/``min_value``), ``~`` sets a key not set yet (``inc_value``'s ``start``).
StatOp = Literal["+", "=", ">", "<", "~"]
STAT_OPS: Final[frozenset[str]] = frozenset("+=><~")
#: The longest spider stat key, the most distinct keys the frontier keeps (a hostile or
#: runaway spider cannot grow the server without bound: past it new keys are dropped and
#: counted as ``errors/spider_stats_dropped``), and the most characters of stats one
#: outcome carries (the rest ride with the next).
MAX_STAT_KEY_CHARS = 200
MAX_SPIDER_STATS = 1000
MAX_STAT_NOTES_CHARS = 3000
#: The longest reason: a failure code or close reason is short (it is journaled);
#: notes, which carry spider stats, may be longer.
MAX_REASON_CHARS = 200
MAX_NOTES_CHARS = MAX_REASON_CHARS + MAX_STAT_NOTES_CHARS + 800


def stat_note(op: StatOp, key: str, value: float) -> str:
    """One spider stat as a note: ``$+pages%2Fseen:3``."""
    return f"${op}{quote(key, safe='/_-.')}:{value!r}"


def read_stat_notes(notes: str) -> Iterator[tuple[StatOp, str, float]]:
    """``(op, key, value)`` for each well-formed spider stat in ``notes``; malformed ones
    (a key too long or empty, a value not a finite number) are skipped."""
    for note in notes.split(","):
        if note[:1] != "$" or note[1:2] not in STAT_OPS:
            continue
        encoded, sep, text = note[2:].partition(":")
        key = unquote(encoded)
        if not sep or not 0 < len(key) <= MAX_STAT_KEY_CHARS:
            continue
        try:
            value: float = int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            continue
        if math.isfinite(value):
            yield cast(StatOp, note[1]), key, value


def with_errback_notes(reason: str, notes: list[str]) -> str:
    """A failure's reason with its errback's notes after it: ``http_404|callback_error``."""
    joined = join_notes(notes)
    return f"{reason}|{joined}" if joined else reason


def split_errback_notes(reason: str) -> tuple[str, str]:
    """``(failure code, notes)`` of a ``fail``/``retry`` outcome's reason."""
    code, _, notes = reason.partition("|")
    return code, notes


#: Caps on what one worker call may carry: a hostile or buggy peer is refused, not served.
MAX_BATCH = 10_000
MAX_ITEM_BYTES = 4 * 2**20
MAX_LINKS_PER_PAGE = 100_000
#: The range of SQLite's INTEGER, and of the fingerprints urls.Fingerprinter makes: a
#: fingerprint, priority or depth outside it would fail every later journal commit.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Caps on one request's headers, meta and cb_kwargs together: containers nested at most
#: this deep (a deeper one fails to pickle when the request is leased or journaled), at
#: most this many values, and at most this many characters and bytes (body included).
MAX_NESTING = 100
MAX_REQUEST_VALUES = 10_000
MAX_REQUEST_BYTES = 4 * 2**20
#: Caps on the cookies the frontier keeps for the crawl: one cookie (its name, value and
#: attributes; browsers keep at least 4,096 bytes), the cookies in one jar, the jars, the
#: bytes of all of them, and the changes one exchange may carry. Past the first three the
#: frontier drops new cookies (counted as ``cookies/dropped``); an exchange past the last,
#: or a cookie past the first, is refused.
MAX_COOKIE_BYTES = 8192
MAX_COOKIES_PER_JAR = 1000
MAX_JARS = 10_000
MAX_COOKIE_STORE_BYTES = 64 * 2**20
MAX_COOKIE_CHANGES = 10_000
_MAX_JAR_ID = 200


# -- what workers may send ----------------------------------------------------------------


def _fail(what: str) -> None:
    raise ValueError(f"refused malformed exchange from worker: {what}")


def check_exchange(
    worker: Any,
    outcomes: Any,
    want: Any,
    *,
    max_batch: int,
    max_item_bytes: int,
    max_links: int,
    cookies: Any = None,
) -> None:
    """Check the types and sizes of one ``exchange`` call before the frontier sees it
    (``cookies``: the worker's cookie changes, when it sent any).

    Raises:
        ValueError: naming the first thing that is wrong.
    """
    if not isinstance(worker, str) or not 0 < len(worker) <= 200:
        _fail("worker id must be a short string")
    if type(want) is not int or not 0 <= want <= max_batch:
        _fail(f"want must be an int in 0..{max_batch}")
    if not isinstance(outcomes, list) or len(outcomes) > max_batch:
        _fail(f"outcomes must be a list of at most {max_batch}")
    for outcome in outcomes:
        if not isinstance(outcome, tuple) or len(outcome) != 6:
            _fail("an outcome must be a 6-tuple")
        lease_id, kind, reason, requests, items, info = outcome
        if type(lease_id) is not int or not 0 <= lease_id <= INT64_MAX or kind not in KINDS:
            _fail("bad lease id or outcome kind")
        if type(reason) is not str or not _utf8(reason):
            _fail("reason must be a short string of valid UTF-8")
        if len(reason) > MAX_REASON_CHARS and (
            kind in ("close", "robots", "release")
            or len(reason) > MAX_NOTES_CHARS
            or (kind in ("fail", "retry") and reason.find("|", 0, MAX_REASON_CHARS + 1) < 0)
        ):
            # A dead letter's reason (the failure code) is journaled: it stays short.
            _fail(f"reason must be a short string (notes at most {MAX_NOTES_CHARS} characters)")
        if not isinstance(info, tuple) or len(info) not in (3, 4) or not _good_info(*info[:3]):
            _fail("info must be (status, latency_s, retry_after_s): an int 0..999, two seconds")
        if not isinstance(items, list) or not isinstance(requests, list):
            _fail("items and requests must be lists")
        if len(requests) > max_links:
            _fail(f"{len(requests)} new requests from one page, over {max_links}")
        for item in items:
            if not isinstance(item, str) or len(item) > max_item_bytes:
                _fail(f"an item must be a JSON string of at most {max_item_bytes} bytes")
        _check_requests(requests)
        if len(info) == 4 and not (type(info[3]) is int and INT64_MIN <= info[3] <= INT64_MAX):
            _fail("info's final fingerprint must be a signed 64-bit int")
    if cookies is not None:
        check_cookie_changes(cookies)


def cookie_size(compound: str, name: str, cookie: dict[str, Any]) -> int:
    """The bytes a cookie costs the frontier, about (its strings' lengths)."""
    size = len(compound) + len(name)
    for key, value in cookie.items():
        size += len(key) + (len(value) if type(value) is str else 8)
    return size


def check_cookie_changes(changes: Any) -> None:
    """Check a worker's cookie changes: ``[(jar, "domain|path", name, cookie | None)]``,
    each cookie a flat dict of short strings, bools and numbers.

    Raises:
        ValueError: naming the first thing that is wrong.
    """
    if not isinstance(changes, list) or len(changes) > MAX_COOKIE_CHANGES:
        _fail(f"cookie changes must be a list of at most {MAX_COOKIE_CHANGES}")
    for change in changes:
        if type(change) is not tuple or len(change) != 4:
            _fail("a cookie change must be (jar, 'domain|path', name, cookie or None)")
        jar, compound, name, cookie = change
        if not (
            jar is None
            or (type(jar) is int and INT64_MIN <= jar <= INT64_MAX)
            or (type(jar) is str and len(jar) <= _MAX_JAR_ID and _utf8(jar))
        ):
            _fail(f"a cookie jar must be None, an int or a str of at most {_MAX_JAR_ID}")
        if (
            not (type(compound) is str and "|" in compound and type(name) is str and _utf8(name))
            or len(compound) + len(name) > MAX_COOKIE_BYTES
        ):
            _fail("a cookie's 'domain|path' and name must be short strings")
        if cookie is None:
            continue
        if type(cookie) is not dict or len(cookie) > 20:
            _fail("a cookie must be a dict of at most 20 attributes")
        for key, value in cookie.items():
            if type(key) is not str or type(value) not in (str, bool, int, float):
                _fail("a cookie's attributes must be strings, bools or numbers")
        if cookie_size(compound, name, cookie) > MAX_COOKIE_BYTES:
            _fail(f"a cookie over {MAX_COOKIE_BYTES} bytes (jar {jar!r:.40}, {name[:40]!r})")


def _utf8(text: str) -> bool:
    """False for a string SQLite cannot store (a lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _good_info(status: Any, latency: Any, retry_after: Any) -> bool:
    return (
        type(status) is int
        and 0 <= status < 1000
        and all(type(v) in (int, float) and 0 <= v < 1e9 for v in (latency, retry_after))
    )


def _check_requests(
    entries: Sequence[Any], lo: int = INT64_MIN, hi: int = INT64_MAX, longest: int = MAX_URL_LENGTH
) -> None:
    # This runs for every link of every page: one expression passes a plain request, and
    # only a request it does not pass is examined again, to say what is wrong with it.
    for entry in entries:
        if type(entry) is not tuple or len(entry) != 3:
            _fail("a request entry must be (fingerprint, host, wire)")
        fp, host, wire = entry
        if type(wire) is not tuple or len(wire) != 11:
            _fail("a request must be an 11-tuple")
        url, callback, method, headers, body, meta, priority, _, cb_kwargs, depth, errback = wire
        if not (
            type(url) is str
            and len(url) <= longest
            and url.isascii()
            and type(fp) is int
            and lo <= fp <= hi
            and type(host) is str
            and len(host) <= 255
            and host.isascii()
            and type(priority) is int
            and lo <= priority <= hi
            and type(depth) is int
            and 0 <= depth <= hi
            and type(method) is str
            and (callback is None or type(callback) is str)
            and (errback is None or type(errback) is str)
            and body is None
        ):
            _check_request(fp, host, wire)
        if headers is not None or meta is not None or cb_kwargs is not None:
            _check_values(url, (headers, meta, cb_kwargs), len(body) if body else 0)


def _check_request(fp: Any, host: Any, wire: tuple[Any, ...]) -> None:
    """Raise for the first thing wrong with a request, if anything is."""
    url, callback, method, _, body, _, priority, _, _, depth, errback = wire
    if type(url) is not str or len(url) > MAX_URL_LENGTH or not url.isascii():
        _fail(f"a request URL must be an ASCII string of at most {MAX_URL_LENGTH} characters")
    if type(fp) is not int or not INT64_MIN <= fp <= INT64_MAX:
        _fail(f"request {url}: its fingerprint {fp!r:.30} is not a signed 64-bit int")
    if type(host) is not str or len(host) > 255 or not host.isascii():
        _fail(f"request {url}: the host must be an ASCII string of at most 255 characters")
    if type(priority) is not int or not INT64_MIN <= priority <= INT64_MAX:
        _fail(f"request {url}: its priority {priority!r:.30} is not a signed 64-bit int")
    if type(depth) is not int or not 0 <= depth <= INT64_MAX:
        _fail(f"request {url}: its depth {depth!r:.30} is not an int in 0..2**63-1")
    if (
        type(method) is not str
        or not (callback is None or type(callback) is str)
        or not (errback is None or type(errback) is str)
    ):
        _fail(f"request {url}: method, callback and errback must be strings")
    if body is not None and (
        not isinstance(body, bytes | bytearray) or len(body) > MAX_REQUEST_BYTES
    ):
        _fail(f"request {url}: the body must be bytes, at most {MAX_REQUEST_BYTES}")


_SEQUENCES = (list, tuple, set, frozenset)
_SCALARS = frozenset({int, float, bool, type(None)})


def check_request_fields(wire: tuple[Any, ...]) -> None:
    """The server's caps on one request's headers, meta and cb_kwargs (nesting, values,
    size), for a worker to apply where the request is made.

    Raises:
        ValueError: naming the request's URL and the cap it passes.
    """
    body = wire[4]
    _check_values(wire[0], (wire[3], wire[5], wire[8]), len(body) if body else 0)


def _check_values(url: str, fields: tuple[Any, Any, Any], size: int) -> None:
    """Refuse headers, meta and cb_kwargs that are not dicts, or that together pass the
    nesting, value or size caps. One level at a time, never recursive: no depth can
    exhaust the server's stack. The common types are tested first, by identity."""
    level = [value for value in fields if value is not None]
    if not all(isinstance(value, dict) for value in level):
        _fail(f"request {url}: headers, meta and cb_kwargs must be dicts or None")
    count = depth = 0
    while level:
        depth += 1
        count += len(level)
        if depth > MAX_NESTING:
            _fail(f"request {url}: headers, meta or cb_kwargs nest over {MAX_NESTING} deep")
        if count > MAX_REQUEST_VALUES:
            _fail(f"request {url}: over {MAX_REQUEST_VALUES} values in headers, meta, cb_kwargs")
        deeper: list[Any] = []
        for value in level:
            kind = type(value)
            if kind is str:
                size += len(value)
            elif kind is dict:
                deeper += value  # the keys: a tuple key nests too
                deeper += value.values()
            elif kind in _SCALARS:
                pass
            elif kind is list or kind is tuple:
                deeper += value
            elif kind is bytes:
                size += len(value)
            elif isinstance(value, dict):
                deeper += value
                deeper += value.values()
            elif isinstance(value, _SEQUENCES):
                deeper += value
            else:
                fields_of = getattr(value, "__dict__", None)  # an instance's fields
                if isinstance(fields_of, dict):
                    deeper += fields_of.values()
        level = deeper
    if size > MAX_REQUEST_BYTES:
        _fail(f"request {url}: over {MAX_REQUEST_BYTES} bytes in body, headers, meta, cb_kwargs")
