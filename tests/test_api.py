"""Tests for the public surface of the ``spiderfarm`` package."""

from __future__ import annotations

import types

import spiderfarm


def test_all_is_sorted() -> None:
    assert spiderfarm.__all__ == sorted(spiderfarm.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from spiderfarm import *", namespace)
    del namespace["__builtins__"]
    assert sorted(namespace) == spiderfarm.__all__


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name, value in vars(spiderfarm).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the __future__ feature, not part of the API
    }
    assert set(spiderfarm.__all__) == public | {"__version__"}


def test_version() -> None:
    assert spiderfarm.__version__ == "0.1.0"


def test_the_scrapy_vocabulary_imports_from_the_top() -> None:
    from spiderfarm import Request, Response, Spider
    from spiderfarm.http import Request as HttpRequest
    from spiderfarm.http import Response as HttpResponse
    from spiderfarm.spider import Spider as BaseSpider

    assert (Request, Response, Spider) == (HttpRequest, HttpResponse, BaseSpider)


def test_the_response_kinds_import_from_the_top_as_in_scrapy_http() -> None:
    from spiderfarm import (
        HtmlResponse,
        JsonResponse,
        Response,
        TextResponse,
        XmlResponse,
        http,
        response,
    )

    for cls in (HtmlResponse, JsonResponse, Response, TextResponse, XmlResponse):
        assert getattr(http, cls.__name__) is getattr(response, cls.__name__) is cls


def test_every_error_users_catch_is_exported() -> None:
    for name in (
        "CloseSpider",
        "ConnectError",
        "FeedError",
        "FetchError",
        "IgnoreRequest",
        "InvalidRequest",
        "NotSupported",
        "SettingsError",
        "SpiderLoadError",
        "SpiderfarmError",
    ):
        assert issubclass(getattr(spiderfarm, name), spiderfarm.SpiderfarmError), name


def test_import_spiderfarm_as_scrapy_gives_scrapys_everyday_names() -> None:
    import spiderfarm as scrapy

    assert scrapy.exceptions.DropItem is scrapy.DropItem
    assert scrapy.exceptions.CloseSpider is scrapy.CloseSpider
    assert scrapy.exceptions.IgnoreRequest is scrapy.IgnoreRequest
    assert scrapy.exceptions.NotSupported is scrapy.NotSupported
    assert scrapy.http.HtmlResponse is scrapy.HtmlResponse
    sel = scrapy.Selector(text="<p class=x>hi</p>")
    assert sel.css("p.x::text").get() == "hi"
    assert isinstance(sel.css("p"), scrapy.SelectorList)
