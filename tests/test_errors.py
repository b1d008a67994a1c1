"""Tests for spiderfarm.errors: one tree, and every exception survives a pickle round trip
(errors cross processes through the manager)."""

from __future__ import annotations

import pickle

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
        "SettingsError",
        "SpiderLoadError",
        "SpiderfarmError",
    ]


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
