"""Downloader middlewares and item pipelines: the extension points, run on the workers.

A downloader middleware may define any of (plain or ``async``; Scrapy's signatures)::

    process_request(request, spider)            -> None | Response | Request
    process_response(request, response, spider) -> Response | Request
    process_exception(request, exception, spider) -> None | Response | Request

``process_request`` runs in the listed order, ``process_response`` and
``process_exception`` in reverse. Returning a ``Request`` schedules it instead (through
the frontier, deduplicated unless ``dont_filter``); returning a ``Response`` skips the
fetch (or the failure). Build the kind the callback reads: ``HtmlResponse(url, status,
headers, body, request)`` for a page (``Response(...)`` picks the kind from the headers, as
the fetcher does). Raising ``IgnoreRequest`` drops the request quietly.

An item pipeline may define ``open_spider(spider)``, ``process_item(item, spider)`` (returns
the item, possibly changed, or raises ``DropItem``) and ``close_spider(spider)``.

Components are given as import paths (``"myproject.pipelines.Clean"``) in the settings
``downloader_middlewares`` / ``item_pipelines``, or as classes or paths in the spider
attributes of the same names. A class with ``from_spider(spider)`` is built with it;
otherwise it is called with no arguments.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Sequence
from typing import Any

from .errors import DropItem, SettingsError, SpiderfarmError
from .http import Request, Response

logger = logging.getLogger(__name__)

__all__ = ["Middlewares", "Pipelines", "ProxyMiddleware", "load_components"]


def _load(ref: Any, spider: Any) -> Any:
    cls = ref
    if isinstance(ref, str):
        module_name, _, attr = ref.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SettingsError(
                f"cannot load component {ref!r}: {exc}; give a full import path "
                "(package.module.Class) importable on every worker"
            ) from None
    if not inspect.isclass(cls):
        raise SettingsError(f"component {ref!r} is not a class")
    factory = getattr(cls, "from_spider", None)
    return factory(spider) if factory is not None else cls()


def load_components(refs: Sequence[Any], spider: Any) -> list[Any]:
    """Instances of ``refs`` (classes or import paths), in order.

    Raises:
        SettingsError: a path that does not import, or is not a class.
    """
    return [_load(ref, spider) for ref in refs]


async def _call(method: Any, *args: Any) -> Any:
    result = method(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Middlewares:
    """The downloader middleware chain of one worker."""

    def __init__(self, components: list[Any], spider: Any) -> None:
        self.spider = spider
        _require_hooks(components, ("process_request", "process_response", "process_exception"))
        self._requests = [c.process_request for c in components if hasattr(c, "process_request")]
        self._responses = [
            c.process_response for c in reversed(components) if hasattr(c, "process_response")
        ]
        self._exceptions = [
            c.process_exception for c in reversed(components) if hasattr(c, "process_exception")
        ]

    async def request(self, request: Request) -> Response | Request | None:
        for method in self._requests:
            result = await _call(method, request, self.spider)
            if result is not None:
                return _checked(result, method)
        return None

    async def response(self, request: Request, response: Response) -> Response | Request:
        for method in self._responses:
            result = _checked(await _call(method, request, response, self.spider), method)
            if isinstance(result, Request):
                return result
            response = result
        return response

    async def exception(self, request: Request, exc: Exception) -> Response | Request | None:
        for method in self._exceptions:
            result = await _call(method, request, exc, self.spider)
            if result is not None:
                return _checked(result, method)
        return None


def _require_hooks(components: list[Any], hooks: tuple[str, ...]) -> None:
    for c in components:
        if not any(hasattr(c, hook) for hook in hooks):
            raise SettingsError(
                f"component {type(c).__module__}.{type(c).__qualname__} has none of "
                f"{', '.join(hooks)}: is it listed in the right setting?"
            )


def _checked(result: Any, method: Any) -> Response | Request:
    if isinstance(result, Response | Request):
        return result
    raise TypeError(
        f"{method.__qualname__} returned {type(result).__name__}; return None, a Response "
        "or a Request"
    )


class Pipelines:
    """The item pipeline chain of one worker."""

    def __init__(self, components: list[Any], spider: Any) -> None:
        self.spider = spider
        _require_hooks(components, ("process_item", "open_spider", "close_spider"))
        self._components = components
        self._process = [c.process_item for c in components if hasattr(c, "process_item")]

    async def open(self) -> None:
        """Run every ``open_spider``.

        Raises:
            SpiderfarmError: naming the pipeline whose ``open_spider`` raised, and why.
        """
        for c in self._components:
            if hasattr(c, "open_spider"):
                try:
                    await _call(c.open_spider, self.spider)
                except Exception as exc:
                    logger.debug("open_spider of %s", type(c).__name__, exc_info=True)
                    name = f"{type(c).__module__}.{type(c).__qualname__}"
                    raise SpiderfarmError(
                        f"item pipeline {name}.open_spider failed: {type(exc).__name__}: {exc}"
                    ) from exc

    async def close(self) -> None:
        for c in self._components:
            if hasattr(c, "close_spider"):
                try:
                    await _call(c.close_spider, self.spider)
                except Exception:
                    logger.exception("pipeline %s failed to close", type(c).__name__)

    async def process(self, item: Any) -> Any:
        """The item after every pipeline; raises ``DropItem`` to drop it."""
        for method in self._process:
            item = await _call(method, item, self.spider)
            if item is None:
                raise DropItem(f"{method.__qualname__} returned None")
        return item


class ProxyMiddleware:
    """Sends every request through the spider's ``proxy`` (``-a proxy=http://host:port``),
    unless the request sets ``meta["proxy"]`` itself. The fetcher honours ``meta["proxy"]``
    (aiohttp's ``proxy=``: HTTP proxies, and HTTPS through CONNECT)."""

    def __init__(self, proxy: str = "") -> None:
        self.proxy = proxy

    @classmethod
    def from_spider(cls, spider: Any) -> ProxyMiddleware:
        return cls(str(getattr(spider, "proxy", "") or ""))

    def process_request(self, request: Request, spider: Any) -> None:
        if self.proxy and not (request.meta or {}).get("proxy"):
            request.meta = {**(request.meta or {}), "proxy": self.proxy}
