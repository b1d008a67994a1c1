"""``Request``: one thing to fetch, as spiders create it and as it crosses processes.

A ``Request`` crosses processes as a plain tuple (``to_wire`` / ``from_wire``); its
callback travels as a method *name*, checked against the running spider when it is made.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import SpiderfarmError
from .protocol import WireRequest
from .urls import safe_url

if TYPE_CHECKING:
    from .spider import Spider

__all__ = ["InvalidRequest", "Request", "WireRequest", "current_spider"]

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


class Request:
    """One thing to fetch. Mirrors Scrapy's ``Request`` arguments."""

    __slots__ = (
        "body",
        "callback",
        "cb_kwargs",
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
        }
        kwargs.update(changes)
        new = type(self)(**kwargs)
        new.depth = self.depth
        return new

    def to_wire(self) -> WireRequest:
        return (
            self.url,
            self.callback,
            self.method,
            self.headers,
            self.body,
            self.meta or None,
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
        req.headers = req.body = req.meta = req.cb_kwargs = None
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
        return req
