"""``Request``: one thing to fetch, as spiders create it and as it crosses processes.

A ``Request`` crosses processes as a plain tuple (``to_wire`` / ``from_wire``); its
callback travels as a method *name*, checked against the running spider when it is made.
"""

from __future__ import annotations

import contextvars
import inspect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import SpiderfarmError
from .protocol import META_COOKIES, WireRequest
from .urls import safe_url

if TYPE_CHECKING:
    from .spider import Spider

__all__ = ["InvalidRequest", "Request", "WireRequest", "check_meta", "current_spider"]

#: The spider whose callbacks are running; lets ``Request`` check a callback name at once.
current_spider: contextvars.ContextVar[Spider | None] = contextvars.ContextVar(
    "current_spider", default=None
)


class InvalidRequest(SpiderfarmError, ValueError):
    """A ``Request`` was built with a bad URL, method or callback."""


def _callback_name(callback: Any, what: str) -> str | None:
    if callback is None:
        return None
    if isinstance(callback, str):
        name = callback
    elif inspect.ismethod(callback):
        name = callback.__name__
    else:
        raise InvalidRequest(
            f"{what} must be a method of the spider (self.parse_item) or its name, "
            f"got {callback!r}: functions and lambdas cannot travel between processes"
        )
    spider = current_spider.get()
    if spider is not None and not callable(getattr(spider, name, None)):
        raise InvalidRequest(
            f"{what} {name!r} is not a method of spider {spider.name!r}; "
            f"define {type(spider).__name__}.{name}(self, response)"
        )
    return name


#: The attributes a cookie given as a dict may have (Scrapy's).
_COOKIE_KEYS = frozenset({"name", "value", "domain", "path", "secure"})
_MAX_JAR_ID = 200


def _cookie_text(value: Any, what: str, url: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidRequest(
        f"cookies of {url}: {what} must be a str (or UTF-8 bytes, or a number), got {value!r:.60}"
    )


def _cookies(cookies: Any, url: str) -> list[dict[str, Any]] | None:
    """``Request(cookies=...)`` as Scrapy takes it (a dict of names to values, or a list
    of dicts with ``name``, ``value`` and optionally ``domain``, ``path``, ``secure``), as
    a list of plain dicts."""
    if not cookies:
        return None
    if isinstance(cookies, Mapping):
        return [
            {
                "name": _cookie_text(k, "a cookie name", url),
                "value": _cookie_text(v, f"cookie {k!r}", url),
            }
            for k, v in cookies.items()
        ]
    if not isinstance(cookies, list | tuple):
        raise InvalidRequest(
            f"cookies of {url} must be a dict of names to values or a list of dicts "
            f"(name, value, domain, path, secure), got {type(cookies).__name__}"
        )
    out = []
    for cookie in cookies:
        if not isinstance(cookie, Mapping) or "name" not in cookie or "value" not in cookie:
            raise InvalidRequest(
                f"cookies of {url}: each cookie in a list must be a dict with 'name' and "
                f"'value', got {cookie!r:.80}"
            )
        unknown = set(cookie) - _COOKIE_KEYS
        if unknown:
            raise InvalidRequest(
                f"cookies of {url}: unknown cookie attribute {sorted(unknown)[0]!r}; "
                "use name, value, domain, path, secure"
            )
        plain: dict[str, Any] = {
            "name": _cookie_text(cookie["name"], "a cookie name", url),
            "value": _cookie_text(cookie["value"], f"cookie {cookie['name']!r}", url),
        }
        for key in ("domain", "path"):
            if cookie.get(key):
                what = f"the {key} of cookie {plain['name']!r}"
                plain[key] = _cookie_text(cookie[key], what, url)
        if cookie.get("secure"):
            plain["secure"] = True
        out.append(plain)
    return out


def check_meta(meta: Mapping[str, Any], url: str) -> None:
    """Check the meta keys the farm acts on (Scrapy's names and types).

    Raises:
        InvalidRequest: naming the key, the request's URL and what it must be.
    """
    if "max_retry_times" in meta:
        times = meta["max_retry_times"]
        if type(times) is not int or times < 0:
            raise InvalidRequest(
                f"meta['max_retry_times'] of {url} must be an int >= 0 (retries after the "
                f"first attempt), got {times!r:.60}"
            )
    if "download_timeout" in meta:
        timeout = meta["download_timeout"]
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise InvalidRequest(
                f"meta['download_timeout'] of {url} must be a positive number of seconds, "
                f"got {timeout!r:.60}"
            )
    if "handle_httpstatus_list" in meta:
        codes = meta["handle_httpstatus_list"]
        if not isinstance(codes, list | tuple | set | frozenset) or not all(
            type(c) is int and 100 <= c <= 999 for c in codes
        ):
            raise InvalidRequest(
                f"meta['handle_httpstatus_list'] of {url} must be a list of HTTP status "
                f"codes (ints 100-999), got {codes!r:.60}"
            )
    if "cookiejar" in meta:
        jar = meta["cookiejar"]
        if not (type(jar) is int or (type(jar) is str and len(jar) <= _MAX_JAR_ID) or jar is None):
            raise InvalidRequest(
                f"meta['cookiejar'] of {url} must be a str (at most {_MAX_JAR_ID} "
                f"characters) or an int naming the session, got {jar!r:.60}"
            )


class Request:
    """One thing to fetch. Mirrors Scrapy's ``Request`` arguments."""

    __slots__ = (
        "body",
        "callback",
        "cb_kwargs",
        "cookies",
        "depth",
        "dont_filter",
        "errback",
        "headers",
        "meta",
        "method",
        "priority",
        "url",
    )

    def __init__(
        self,
        url: str,
        callback: Any = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        meta: dict[str, Any] | None = None,
        priority: int = 0,
        dont_filter: bool = False,
        cb_kwargs: dict[str, Any] | None = None,
        errback: Any = None,
        cookies: Any = None,
    ) -> None:
        try:
            self.url = safe_url(url)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        self.callback = _callback_name(callback, "callback")
        self.errback = _callback_name(errback, "errback")
        if not isinstance(method, str) or not method.isalpha():
            raise InvalidRequest(f"invalid HTTP method {method!r} for {self.url}")
        self.method = method.upper()
        self.headers = dict(headers) if headers else None
        self.body = body.encode() if isinstance(body, str) else (body or None)
        self.meta = dict(meta) if meta else None  # a copy: requests must not share meta
        if self.meta:
            check_meta(self.meta, self.url)
        self.cookies = _cookies(cookies, self.url)
        if not isinstance(priority, int):
            raise InvalidRequest(f"priority must be an int, got {priority!r} for {self.url}")
        self.priority = priority
        self.dont_filter = dont_filter
        self.cb_kwargs = dict(cb_kwargs) if cb_kwargs else None
        self.depth = 0

    def __repr__(self) -> str:
        return f"<{self.method} {self.url}>"

    def replace(self, **changes: Any) -> Request:
        """A copy with some arguments changed (Scrapy's ``Request.replace``), of the same
        class (a ``FormRequest`` stays one)."""
        kwargs: dict[str, Any] = {
            "url": self.url,
            "callback": self.callback,
            "method": self.method,
            "headers": self.headers,
            "body": self.body,
            "meta": self.meta,
            "priority": self.priority,
            "dont_filter": self.dont_filter,
            "cb_kwargs": self.cb_kwargs,
            "errback": self.errback,
            "cookies": self.cookies,
        }
        kwargs.update(changes)
        new = type(self)(**kwargs)
        new.depth = self.depth
        return new

    def to_wire(self) -> WireRequest:
        meta = self.meta or None
        if self.cookies:
            meta = {**(meta or {}), META_COOKIES: self.cookies}
        return (
            self.url,
            self.callback,
            self.method,
            self.headers,
            self.body,
            meta,
            self.priority,
            self.dont_filter,
            self.cb_kwargs or None,
            self.depth,
            self.errback,
        )

    @classmethod
    def _trusted(cls, url: str, callback: str | None) -> Request:
        """A plain GET for a URL already known to be safe (see ``Response.follow_all``)."""
        req = cls.__new__(cls)
        req.url, req.callback, req.errback, req.method = url, callback, None, "GET"
        req.headers = req.body = req.meta = req.cb_kwargs = req.cookies = None
        req.priority, req.dont_filter, req.depth = 0, False, 0
        return req

    @classmethod
    def from_wire(cls, wire: WireRequest) -> Request:
        # Trusted data from the frontier: skip validation, it ran where the request was made.
        req = cls.__new__(cls)
        (
            req.url,
            req.callback,
            req.method,
            req.headers,
            req.body,
            req.meta,
            req.priority,
            req.dont_filter,
            req.cb_kwargs,
            req.depth,
            req.errback,
        ) = wire
        req.cookies = None
        meta = req.meta
        if meta and META_COOKIES in meta:
            meta = dict(meta)
            req.cookies = meta.pop(META_COOKIES)
            req.meta = meta or None
        return req
