"""The coordination channel's rules: addresses, authkeys, and what a worker may send.

The manager speaks pickle to whoever holds the authkey, and an authenticated peer can
run code on the server (CPython documents this), so the key is the whole defence:
loopback by default, a strong key required for anything else, key files private.
Unauthenticated bytes never reach pickle: the HMAC challenge comes first.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .protocol import KINDS
from .urls import MAX_URL_LENGTH

__all__ = [
    "AUTHKEY_ENV",
    "INT64_MAX",
    "INT64_MIN",
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
    "MIN_KEY_BYTES",
    "check_cookie_changes",
    "check_exchange",
    "check_request_fields",
    "cookie_size",
    "decode_key",
    "is_loopback",
    "load_authkey",
    "parse_address",
    "require_strong_key",
    "write_new_authkey",
]

AUTHKEY_ENV = "SPIDERFARM_AUTHKEY"
MIN_KEY_BYTES = 32
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
_HOW = (
    "generate one with: python -c 'import secrets; print(secrets.token_hex(32))' > farm.key "
    "&& chmod 600 farm.key"
)
# Keys from tutorials and defaults that an attacker tries first.
_WELL_KNOWN = {
    b"", b"abc", b"abracadabra", b"secret", b"password", b"passw0rd", b"changeme", b"key",
    b"authkey", b"spiderfarm", b"test", b"admin", b"letmein", b"123456", b"12345678",
    b"qwerty", b"default",
}  # fmt: skip


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) -> (host, port).

    Raises:
        SettingsError: no port, or a port that is not a number in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        raise SettingsError(f"address {text!r} must be HOST:PORT, for example 127.0.0.1:5000")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise SettingsError(f"address {text!r} has no valid port (0..65535)")
    return host.strip("[]") or default_host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def decode_key(text: str) -> bytes:
    """Key text -> key bytes: hex (64+ digits) or base64 (of 32+ bytes) is decoded,
    anything else is used as it is."""
    text = text.strip()
    if len(text) >= 2 * MIN_KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if len(text) >= 43:  # 32 bytes in base64, padding optional
        try:
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) >= MIN_KEY_BYTES:
            return decoded
    return text.encode()


def load_authkey(path: str | None, env_value: str | None) -> bytes | None:
    """The authkey from a key file or ``SPIDERFARM_AUTHKEY``; None if neither is given.

    Raises:
        SettingsError: the file is unreadable, readable by other users, or empty.
    """
    if path:
        try:
            mode = os.stat(path).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SettingsError(
                    f"authkey file {path!r} is readable by other users (mode "
                    f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}"
                )
            text = Path(path).read_text()
        except OSError as exc:
            raise SettingsError(f"cannot read authkey file {path!r}: {exc.strerror}") from None
    elif env_value is not None:
        text = env_value
    else:
        return None
    key = decode_key(text)
    if not key:
        raise SettingsError(f"the authkey from {path or AUTHKEY_ENV} is empty; {_HOW}")
    return key


def require_strong_key(key: bytes, host: str) -> None:
    """Refuse a weak key for a non-loopback bind.

    Raises:
        SettingsError: saying why the key is weak and how to make a strong one.
    """
    if is_loopback(host):
        return
    if key.lower() in _WELL_KNOWN:
        problem = "a well-known key"
    elif len(key) < MIN_KEY_BYTES:
        problem = f"only {len(key)} bytes"
    elif len(set(key)) < 16:
        problem = "not random (too few distinct bytes)"
    else:
        return
    raise SettingsError(
        f"refusing to listen on {host}: the authkey is {problem}; a non-loopback bind needs "
        f"at least {MIN_KEY_BYTES} random bytes (hex or base64) from --authkey-file or "
        f"{AUTHKEY_ENV}; {_HOW}"
    )


def write_new_authkey(directory: str | None = None) -> tuple[bytes, Path]:
    """Generate a 32-byte key and write it as hex to a new mode-0600 file."""
    key = secrets.token_bytes(MIN_KEY_BYTES)
    fd, name = tempfile.mkstemp(prefix="spiderfarm-", suffix=".key", dir=directory)
    with open(fd, "w") as fh:  # mkstemp creates the file 0600
        fh.write(key.hex() + "\n")
    return key, Path(name)


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
        if type(reason) is not str or len(reason) > 200 or not _utf8(reason):
            _fail("reason must be a short string")  # a dead letter's reason is journaled
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
        if not (
            type(compound) is str and "|" in compound and type(name) is str and _utf8(name)
        ) or len(compound) + len(name) > MAX_COOKIE_BYTES:
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
