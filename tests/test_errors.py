"""Tests for spiderfarm.errors: one tree, and every exception survives a pickle round trip
(errors cross processes through the manager)."""

from __future__ import annotations

import pickle
import re

import pytest

import spiderfarm
import spiderfarm.errors as errors_module
from spiderfarm.errors import (
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
from spiderfarm.http import InvalidRequest

SIMPLE = [
    SpiderfarmError,
    SettingsError,
    SpiderLoadError,
    FeedError,
    ConnectError,
    IgnoreRequest,
    InvalidRequest,
    DropItem,
]


def roundtrip(exc: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(exc))


def test_the_module_exports_exactly_its_exception_classes() -> None:
    assert errors_module.__all__ == sorted(errors_module.__all__)
    defined = {
        name
        for name, value in vars(errors_module).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert set(errors_module.__all__) == defined


def test_the_module_exports_exactly_the_documented_tree() -> None:
    assert errors_module.__all__ == [
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


def test_the_docstring_tree_draws_every_class() -> None:
    drawn = re.findall(r"^ {4}(?:[│ ]*[├└]── )?(\w+)", errors_module.__doc__ or "", re.M)
    assert sorted(drawn) == errors_module.__all__


def test_lease_lost_was_removed() -> None:
    assert not hasattr(errors_module, "LeaseLost")
    assert not hasattr(spiderfarm, "LeaseLost")


@pytest.mark.parametrize("name", errors_module.__all__)
def test_every_error_is_a_spiderfarm_error(name: str) -> None:
    assert issubclass(getattr(errors_module, name), SpiderfarmError)


def test_the_tree_root_is_a_plain_exception() -> None:
    assert SpiderfarmError.__bases__ == (Exception,)
    assert issubclass(InvalidRequest, SpiderfarmError)
    assert issubclass(InvalidRequest, ValueError)


@pytest.mark.parametrize("cls", SIMPLE, ids=lambda c: c.__name__)
def test_simple_errors_pickle_with_the_same_args_and_str(cls: type[Exception]) -> None:
    exc = cls("setting 'x' is bad: use 'y'")
    copy = roundtrip(exc)
    assert type(copy) is cls
    assert copy.args == ("setting 'x' is bad: use 'y'",)
    assert str(copy) == "setting 'x' is bad: use 'y'"


def test_fetch_error_pickles_with_url_reason_and_detail() -> None:
    exc = FetchError("http://example.com/a", "timeout", "no body after 30 s")
    copy = roundtrip(exc)
    assert type(copy) is FetchError
    assert copy.args == ("http://example.com/a", "timeout", "no body after 30 s")
    assert (copy.url, copy.reason, copy.detail) == (
        "http://example.com/a",
        "timeout",
        "no body after 30 s",
    )
    assert str(copy) == str(exc) == "timeout fetching http://example.com/a: no body after 30 s"


def test_fetch_error_without_detail() -> None:
    exc = FetchError("http://example.com/a", "refused")
    copy = roundtrip(exc)
    assert copy.args == ("http://example.com/a", "refused", "")
    assert str(copy) == "refused fetching http://example.com/a"


def test_close_spider_pickles_with_its_reason() -> None:
    copy = roundtrip(CloseSpider("enough_items"))
    assert type(copy) is CloseSpider
    assert (copy.args, copy.reason, str(copy)) == (
        ("enough_items",),
        "enough_items",
        "enough_items",
    )


def test_close_spider_default_reason_survives_pickling() -> None:
    copy = roundtrip(CloseSpider())
    assert (copy.args, copy.reason, str(copy)) == (("cancelled",), "cancelled", "cancelled")


def test_not_supported_pickles_with_url_content_type_action_and_kind() -> None:
    exc = NotSupported("http://example.com/a.png", "image/png", ".text")
    copy = roundtrip(exc)
    assert type(copy) is NotSupported
    assert copy.args == ("http://example.com/a.png", "image/png", ".text", "binary")
    assert (copy.url, copy.content_type, copy.action, copy.kind) == (
        "http://example.com/a.png", "image/png", ".text", "binary",
    )  # fmt: skip
    assert (
        str(copy)
        == str(exc)
        == (
            ".text is not supported: http://example.com/a.png is a binary response "
            "(Content-Type 'image/png'); read .body, or check isinstance(response, "
            "TextResponse) first"
        )
    )


def test_not_supported_on_json_and_without_a_content_type() -> None:
    json_error = roundtrip(
        NotSupported("http://example.com/api", "application/json", ".css()", "JSON")
    )
    assert str(json_error) == (
        ".css() is not supported: http://example.com/api is a JSON response "
        "(Content-Type 'application/json'); read it with .json() or .jmespath()"
    )
    bare = roundtrip(NotSupported("http://example.com/blob", "", ".xpath()"))
    assert str(bare) == (
        ".xpath() is not supported: http://example.com/blob is a binary response "
        "(no Content-Type); read .body, or check isinstance(response, TextResponse) first"
    )
