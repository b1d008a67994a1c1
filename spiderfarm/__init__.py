"""spiderfarm: a distributed web-scraping framework.

One BaseManager server holds the crawl frontier; any number of worker processes lease
batches of requests, fetch them with aiohttp and run your ``Spider`` callbacks.
"""

from __future__ import annotations

from . import exceptions as exceptions  # scrapy.exceptions.DropItem after "as scrapy"
from .errors import (
    CloseSpider,
    ConnectError,
    DropItem,
    FeedError,
    FetchError,
    IgnoreRequest,
    NotSupported,
    SettingsError,
    SpiderfarmError,
    SpiderLoadError,
)
from .http import (
    HtmlResponse,
    InvalidRequest,
    JsonResponse,
    Request,
    Response,
    TextResponse,
    XmlResponse,
)
from .selector import Selector, SelectorList
from .settings import VERSION as __version__
from .settings import Settings
from .spider import Spider

__all__ = [
    "CloseSpider",
    "ConnectError",
    "DropItem",
    "FeedError",
    "FetchError",
    "HtmlResponse",
    "IgnoreRequest",
    "InvalidRequest",
    "JsonResponse",
    "NotSupported",
    "Request",
    "Response",
    "Selector",
    "SelectorList",
    "Settings",
    "SettingsError",
    "Spider",
    "SpiderLoadError",
    "SpiderfarmError",
    "TextResponse",
    "XmlResponse",
    "__version__",
]
