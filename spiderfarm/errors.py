"""The one exception tree of spiderfarm.

    SpiderfarmError
    ├── SettingsError          a setting is unknown or has a bad value
    ├── SpiderLoadError        a spider cannot be found or imported
    ├── FeedError              the output file cannot be opened or written
    ├── ConnectError           the server cannot be reached, or refused the authkey
    ├── FetchError             one request failed at the fetch boundary (reason is a short code)
    ├── NotSupported           a response lacks that: .text of a binary body (Scrapy's name)
    ├── CloseSpider            raised by a callback to end the crawl (Scrapy's name)
    ├── IgnoreRequest          raised by a callback or middleware to drop a request quietly
    └── DropItem               raised by an item pipeline to drop one item (counted)

Every class passes all of its constructor arguments to ``super().__init__`` so that it
pickles and unpickles unchanged (tests check this).
"""

from __future__ import annotations

__all__ = [
    "CloseSpider",
    "ConnectError",
    "DropItem",
    "FeedError",
    "FetchError",
    "IgnoreRequest",
    "NotSupported",
    "SettingsError",
    "SpiderLoadError",
    "SpiderfarmError",
]


class SpiderfarmError(Exception):
    """Root of every error spiderfarm raises on purpose."""


class SettingsError(SpiderfarmError):
    """A setting is unknown or its value cannot be used."""


class SpiderLoadError(SpiderfarmError):
    """A spider cannot be found or its module fails to import."""


class FeedError(SpiderfarmError):
    """The item feed cannot be opened or written."""


class ConnectError(SpiderfarmError):
    """The frontier server cannot be reached, or it refused our authkey."""


class FetchError(SpiderfarmError):
    """A request failed before its callback could run.

    ``reason`` is a short, stable code (``timeout``, ``refused``, ``too_large``,
    ``http_503`` ...) used to count failures and decide retries.
    """

    def __init__(self, url: str, reason: str, detail: str = "") -> None:
        super().__init__(url, reason, detail)
        self.url = url
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.reason} fetching {self.url}{tail}"


class NotSupported(SpiderfarmError):
    """A response was asked for something its kind does not have: ``.text`` or a selector
    of a binary ``Response``, ``.css()`` or ``.xpath()`` of a ``JsonResponse``.

    ``kind`` is ``"binary"`` or ``"JSON"``; ``content_type`` is the header as received
    (``""`` when there was none); ``action`` is what was asked (``".text"``, ``".css()"``).
    """

    def __init__(self, url: str, content_type: str, action: str, kind: str = "binary") -> None:
        super().__init__(url, content_type, action, kind)
        self.url = url
        self.content_type = content_type
        self.action = action
        self.kind = kind

    def __str__(self) -> str:
        header = (
            f"Content-Type {self.content_type[:100]!r}" if self.content_type else "no Content-Type"
        )
        if self.kind == "JSON":
            hint = "read it with .json() or .jmespath()"
        else:
            hint = "read .body, or check isinstance(response, TextResponse) first"
        what = f"{self.url} is a {self.kind} response ({header})"
        return f"{self.action} is not supported: {what}; {hint}"


class CloseSpider(SpiderfarmError):
    """Raise from a callback to stop the whole crawl; ``reason`` appears in the summary."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


class IgnoreRequest(SpiderfarmError):
    """Raise to drop one request without counting it as an error."""


class DropItem(SpiderfarmError):
    """Raise from an item pipeline's ``process_item`` to drop that item."""
