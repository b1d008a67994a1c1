"""spiderfarm: a distributed web-scraping framework.

One BaseManager server holds the crawl frontier; any number of worker processes lease
batches of requests, fetch them with aiohttp and run your ``Spider`` callbacks.
"""

from __future__ import annotations

# Scrapy's submodules, reachable as attributes after "import spiderfarm as scrapy":
# scrapy.exceptions.DropItem, scrapy.spiders.CrawlSpider, scrapy.linkextractors.LinkExtractor.
from . import exceptions as exceptions
from . import http as http
from . import linkextractors as linkextractors
from . import spiders as spiders
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
    FormRequest,
    HtmlResponse,
    InvalidRequest,
    JsonRequest,
    JsonResponse,
    Request,
    Response,
    TextResponse,
    XmlResponse,
)
from .item import Field, Item
from .selector import Selector, SelectorList
from .service import FarmClient, connect
from .settings import VERSION as __version__
from .settings import Settings
from .spider import Spider

__all__ = [
    "CloseSpider",
    "ConnectError",
    "DropItem",
    "FarmClient",
    "FeedError",
    "FetchError",
    "Field",
    "FormRequest",
    "HtmlResponse",
    "IgnoreRequest",
    "InvalidRequest",
    "Item",
    "JsonRequest",
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
    "connect",
]
