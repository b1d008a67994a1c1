"""What one callback (or errback) run gave: the page's items, links and notes so far."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..items import is_item
from ..protocol import PushEntry
from ..request import Request

__all__ = ["PageResult", "is_single"]


def is_single(output: Any) -> bool:
    """Whether a callback's return value is one value (an item or a Request), not many:
    a pydantic model or an attrs instance returned alone is one item, though iterable."""
    return (
        output is None
        or isinstance(output, dict | Request | Mapping)
        or (dataclasses.is_dataclass(output) and not isinstance(output, type))
        or (not isinstance(output, list | tuple) and is_item(output))
    )


class PageResult:
    __slots__ = ("again", "close_reason", "full", "items", "notes", "raw", "requests")

    def __init__(self, again: bool = False) -> None:
        # A page leased again while its earlier lease (expired) is still unanswered: the
        # links that lease recorded as sent may yet be refused, so send them again.
        self.again = again
        self.items: list[str] = []
        self.raw: list[Any] = []  # items waiting for the pipelines
        self.requests: list[PushEntry] = []
        # Counter names for the frontier's stats: "callback_error" counts as
        # errors/callback_error, a name with a slash ("items/dropped") as it is.
        self.notes: list[str] = []
        self.close_reason = ""
        # The page reached MAX_LINKS_PER_PAGE: the callback is not run further (a page of a
        # million links must not hold the loop for half a minute making Requests).
        self.full = False
