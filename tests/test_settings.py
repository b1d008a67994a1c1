"""Tests for spiderfarm.settings: merging layers, converting ``-s`` strings, rejecting
unknown keys and bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from spiderfarm.errors import SettingsError
from spiderfarm.settings import Settings, parse_key_values


def test_merge_of_nothing_is_the_defaults() -> None:
    assert Settings.merge() == Settings()
    assert Settings().concurrency == 16
    assert Settings().retry_http_codes == (408, 429, 500, 502, 503, 504, 522, 524)


def test_later_layers_win() -> None:
    settings = Settings.merge(
        {"concurrency": 4, "delay_s": 1.5},
        {"concurrency": 8},
        {"concurrency": "32"},
    )
    assert settings.concurrency == 32
    assert settings.delay_s == 1.5
    assert settings.timeout_s == 30.0


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        ("concurrency", "8", 8),
        ("concurrency", " 8 ", 8),
        ("concurrency", "8.0", 8),
        ("concurrency", 8.0, 8),
        ("concurrency", "1e2", 100),
        ("timeout_s", "2.5", 2.5),
        ("delay_s", 1, 1.0),
        ("user_agent", "bot/2", "bot/2"),
        ("cookies_enabled", "false", False),
        ("cookies_enabled", "OFF", False),
        ("verify_tls", "yes", True),
        ("verify_tls", "1", True),
        ("verify_tls", False, False),
        ("handle_httpstatus_list", "404,410", (404, 410)),
        ("handle_httpstatus_list", "404, 410 500", (404, 410, 500)),
        ("handle_httpstatus_list", "", ()),
        ("retry_http_codes", [503], (503,)),
        ("default_headers", '{"X-A": "b", "X-N": 1}', {"X-A": "b", "X-N": "1"}),
        ("default_headers", {"Accept": "text/html"}, {"Accept": "text/html"}),
        ("default_headers", None, None),
    ],
)
def test_values_are_converted_to_the_field_type(key: str, given: Any, expected: Any) -> None:
    value = getattr(Settings.merge({key: given}), key)
    assert value == expected
    assert type(value) is type(expected)


def test_unknown_key_suggests_the_closest_setting() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({"concurency": "4"})
    assert str(info.value) == (
        "unknown setting 'concurency'; did you mean 'concurrency'? "
        "(see `python -m spiderfarm crawl --help` for the list)"
    )


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({"xyzzy": 1})
    assert str(info.value) == (
        "unknown setting 'xyzzy' (see `python -m spiderfarm crawl --help` for the list)"
    )


@pytest.mark.parametrize(
    ("key", "given", "message"),
    [
        (
            "concurrency",
            "many",
            "bad value 'many' for setting 'concurrency' (int): "
            "could not convert string to float: 'many'",
        ),
        (
            "concurrency",
            True,
            "bad value True for setting 'concurrency' (int): expected a number, got True",
        ),
        (
            "verify_tls",
            "maybe",
            "bad value 'maybe' for setting 'verify_tls' (bool): expected true or false",
        ),
        (
            "verify_tls",
            1,
            "bad value 1 for setting 'verify_tls' (bool): expected true or false",
        ),
        (
            "handle_httpstatus_list",
            "404,x",
            "bad value ['404', 'x'] for setting 'handle_httpstatus_list' (tuple[int, ...]): "
            "invalid literal for int() with base 10: 'x'",
        ),
        (
            "default_headers",
            "[1]",
            "bad value [1] for setting 'default_headers' (dict[str, str] | None): "
            "expected a JSON object",
        ),
    ],
)
def test_bad_value_raises_settings_error_naming_the_key(key: str, given: Any, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({key: given})
    assert str(info.value) == message


def test_bad_json_for_a_dict_setting_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"^bad value '\{bad' for setting 'default_headers'"):
        Settings.merge({"default_headers": "{bad"})


@pytest.mark.parametrize(
    ("key", "given", "message"),
    [
        ("concurrency", "0", "setting concurrency=0 is below its minimum 1"),
        ("delay_s", "-1", "setting delay_s=-1.0 is below its minimum 0"),
        ("max_retries", -1, "setting max_retries=-1 is below its minimum 0"),
        ("timeout_s", "0", "setting timeout_s=0.0 is below its minimum 0.001"),
        ("lease_timeout_s", 0.5, "setting lease_timeout_s=0.5 is below its minimum 1"),
    ],
)
def test_below_minimum_raises_settings_error(key: str, given: Any, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({key: given})
    assert str(info.value) == message


def test_the_constructor_checks_minimums_too() -> None:
    with pytest.raises(SettingsError, match=r"^setting per_host_concurrency=0 is below"):
        Settings(per_host_concurrency=0)


def test_minimum_values_are_accepted() -> None:
    settings = Settings.merge({"concurrency": "1", "delay_s": "0", "max_retries": 0})
    assert (settings.concurrency, settings.delay_s, settings.max_retries) == (1, 0.0, 0)


@pytest.mark.parametrize(("key", "minimum"), [("timeout_s", "0.001"), ("delay_s", "0")])
def test_nan_is_rejected(key: str, minimum: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({key: "nan"})
    assert str(info.value) == f"setting {key}=nan is below its minimum {minimum}"


def test_the_constructor_rejects_nan_too() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(delay_s=float("nan"))
    assert str(info.value) == "setting delay_s=nan is below its minimum 0"


@pytest.mark.parametrize("given", [2.7, "2.5", "nan", "inf"], ids=["float", "string", "nan", "inf"])
def test_a_fractional_number_for_an_int_setting_is_rejected(given: Any) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({"concurrency": given})
    assert str(info.value) == (
        f"bad value {given!r} for setting 'concurrency' (int): expected a whole number"
    )


def test_none_for_a_str_setting_is_rejected() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({"user_agent": None})
    assert str(info.value) == (
        "bad value None for setting 'user_agent' (str): expected a string, got NoneType"
    )


def test_politeness_key_ip_is_accepted() -> None:
    assert Settings.merge({"politeness_key": "ip"}).politeness_key == "ip"
    assert Settings(politeness_key="ip").politeness_key == "ip"


@pytest.mark.parametrize("given", ["IP", "address", ""])
def test_a_bad_politeness_key_names_the_setting_and_the_allowed_values(given: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.merge({"politeness_key": given})
    message = f"setting politeness_key={given!r} must be 'host', 'domain' or 'ip'"
    assert str(info.value) == message


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.concurrency = 3  # type: ignore[misc]
    assert settings.concurrency == 16


def test_to_dict_and_describe_cover_every_field() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert list(Settings().to_dict()) == names
    described = Settings.describe()
    assert [name for name, _, _ in described] == names
    assert described[0] == ("concurrency", "16", "requests in flight per worker process")


def test_parse_key_values() -> None:
    assert parse_key_values(["a=1", " b =x=y", "c="], "-s") == {"a": "1", "b": "x=y", "c": ""}
    assert parse_key_values([], "-a") == {}


@pytest.mark.parametrize("pair", ["noequals", "=x", " =x"])
def test_parse_key_values_rejects_a_pair_without_a_key(pair: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_key_values([pair], "-s")
    assert str(info.value) == f"-s expects KEY=VALUE, got {pair!r}"


def test_parsed_command_line_pairs_merge_into_settings() -> None:
    pairs = parse_key_values(["concurrency=4", "verify_tls=no", "retry_http_codes=503,504"], "-s")
    settings = Settings.merge({"concurrency": 32}, pairs)
    assert (settings.concurrency, settings.verify_tls, settings.retry_http_codes) == (
        4,
        False,
        (503, 504),
    )


def test_scrapy_setting_names_are_read_as_their_counterparts() -> None:
    s = Settings.merge(
        {
            "DOWNLOAD_DELAY": 1.5,
            "CONCURRENT_REQUESTS": 4,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 2,
            "ROBOTSTXT_OBEY": False,
            "ITEM_PIPELINES": {"a.B": 300, "c.D": 100, "x.Y": None},
            "DOWNLOADER_MIDDLEWARES": {"scrapy.downloadermiddlewares.retry.RetryMiddleware": 5},
            "BOT_NAME": "mybot",
            "FEED_EXPORT_FIELDS": ["name", "price"],
        },
        {"RETRY_ENABLED": "false"},
    )
    assert (s.delay_s, s.concurrency, s.per_host_concurrency, s.obey_robots) == (1.5, 4, 2, False)
    assert s.item_pipelines == ("c.D", "a.B")  # by order; None disables
    assert s.downloader_middlewares == ()  # Scrapy's own are built in here
    assert s.feed_fields == ("name", "price")
    assert s.max_retries == 0


def test_a_scrapy_setting_without_counterpart_is_named() -> None:
    with pytest.raises(SettingsError, match=r"Scrapy setting 'HTTPCACHE_ENABLED' has no"):
        Settings.merge({"HTTPCACHE_ENABLED": True})
    with pytest.raises(SettingsError, match=r"did you mean 'DOWNLOAD_DELAY'"):
        Settings.merge({"DOWNLOAD_DELAYS": 1})


def test_the_readme_lists_every_setting_with_its_default_and_meaning() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [
        name
        for name, default, text in Settings.describe()
        if f"| `{name}` | `{default}` | {text} |" not in readme
    ]
    assert missing == []


def test_scrapy_redis_idle_setting_is_read_as_idle_close_s() -> None:
    assert Settings.merge({"MAX_IDLE_TIME_BEFORE_CLOSE": "5"}).idle_close_s == 5.0
