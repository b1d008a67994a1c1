"""spiderfarm: a distributed web-scraping framework.

One BaseManager server holds the crawl frontier; any number of worker processes lease
batches of requests, fetch them with aiohttp and run your ``Spider`` callbacks.
"""

from __future__ import annotations

from .errors import (
    CloseSpider,
    ConnectError,
    DropItem,
    FeedError,
    FetchError,
    IgnoreRequest,
    SettingsError,
    SpiderfarmError,
    SpiderLoadError,
)
from .http import InvalidRequest, Request, Response
from .settings import VERSION as __version__
from .settings import Settings
from .spider import Spider

__all__ = [
    "CloseSpider",
    "ConnectError",
    "DropItem",
    "FeedError",
    "FetchError",
    "IgnoreRequest",
    "InvalidRequest",
    "Request",
    "Response",
    "Settings",
    "SettingsError",
    "Spider",
    "SpiderLoadError",
    "SpiderfarmError",
    "__version__",
]
