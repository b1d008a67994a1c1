"""Settings: one frozen dataclass, merged defaults < spider ``custom_settings`` < ``-s``.

Unknown keys are an error with a did-you-mean; values given as strings (``-s k=v``) are
converted to the field's type, and every value is range-checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SettingsError

VERSION = "0.1.0"  # the package's version; spiderfarm.__version__ re-exports it

logger = logging.getLogger(__name__)

__all__ = ["Settings", "parse_key_values"]


def _opt(default: Any, help: str, minimum: float | None = 0) -> Any:
    return field(default=default, metadata={"help": help, "min": minimum})


@dataclass(frozen=True, slots=True)
class Settings:
    # fetching, per worker
    concurrency: int = _opt(16, "requests in flight per worker process", 1)
    timeout_s: float = _opt(30.0, "total time allowed for one fetch, body included", 0.001)
    connect_timeout_s: float = _opt(10.0, "time allowed to open a connection", 0.001)
    read_timeout_s: float = _opt(15.0, "longest wait for the next body chunk", 0.001)
    max_body_bytes: int = _opt(32 * 2**20, "largest body kept, after decompression", 1)
    max_redirects: int = _opt(10, "redirect hops followed (http and https only)")
    user_agent: str = _opt(
        f"spiderfarm/{VERSION}", "User-Agent header, also the robots.txt token matched", None
    )
    default_headers: dict[str, str] | None = _opt(
        None, "extra headers for every request (JSON object with -s)", None
    )
    cookies_enabled: bool = _opt(
        True, "keep cookies, in jars the whole farm shares (meta cookiejar)", None
    )
    verify_tls: bool = _opt(True, "verify TLS certificates", None)
    # crawl scope and limits, enforced by the frontier
    depth_limit: int = _opt(0, "deepest link depth followed; 0 means no limit")
    depth_priority: int = _opt(
        0,
        "priority lowered by depth x this: positive for breadth-first, negative for depth-first",
        None,
    )
    max_pages: int = _opt(0, "stop after this many requests are handed out; 0 means no limit")
    max_items: int = _opt(0, "stop after this many items are written; 0 means no limit")
    max_seconds: float = _opt(0.0, "stop after this many seconds; 0 means no limit")
    downloader_middlewares: tuple[str, ...] = _opt(
        (), "import paths of downloader middlewares, in order (comma-separated with -s)", None
    )
    item_pipelines: tuple[str, ...] = _opt(
        (), "import paths of item pipelines, in order (comma-separated with -s)", None
    )
    handle_httpstatus_list: tuple[int, ...] = _opt(
        (), "non-2xx statuses passed to callbacks instead of failing", None
    )
    # politeness, farm-wide
    per_host_concurrency: int = _opt(8, "requests in flight to one host across all workers", 1)
    delay_s: float = _opt(0.0, "least time between two requests to one host")
    randomize_delay: bool = _opt(
        False, "wait 0.5-1.5x the host's delay instead of exactly it", None
    )
    autothrottle: bool = _opt(True, "adapt each host's delay to its latency and errors", None)
    autothrottle_target_concurrency: float = _opt(
        4.0, "requests the throttle aims to have in flight to one host", 0.01
    )
    autothrottle_max_delay_s: float = _opt(60.0, "longest delay the throttle sets")
    obey_robots: bool = _opt(True, "fetch robots.txt once per site and obey it", None)
    max_crawl_delay_s: float = _opt(
        60.0, "longest robots.txt Crawl-delay obeyed; a longer one is capped to this"
    )
    politeness_key: str = _opt(
        "host",
        "group requests for politeness by host (host:port), domain (registered domain) "
        "or ip (the host's IP address, resolved on the workers)",
        None,
    )
    # reliability
    max_retries: int = _opt(2, "retries after the first attempt for network errors and 408/429/5xx")
    retry_http_codes: tuple[int, ...] = _opt(
        (408, 429, 500, 502, 503, 504, 522, 524), "statuses that are retried", None
    )
    retry_backoff_s: float = _opt(0.5, "first retry delay; doubles each attempt, with jitter")
    retry_backoff_max_s: float = _opt(60.0, "longest retry delay")
    lease_timeout_s: float = _opt(
        120.0, "a leased request not acked by then is handed out again", 1
    )
    worker_timeout_s: float = _opt(10.0, "a worker silent this long is dead; its work requeued", 1)
    log_stats_s: float = _opt(
        60.0, "seconds between stats lines in the log when stderr is not a terminal; 0: never"
    )
    # feeds, written by the server
    feed_fields: tuple[str, ...] = _opt(
        (),
        "fields every feed writes, in this order (CSV: exactly these columns); "
        "empty: all (CSV: the first item's keys) (comma-separated with -s)",
        None,
    )
    # service mode (--serve)
    idle_close_s: float = _opt(
        0.0, "with --serve: close after this long with nothing queued or leased; 0: never"
    )
    result_queue_size: int = _opt(
        10_000, "with --serve: results held for clients; past it, dropped (the feed has them)", 1
    )
    result_queue_bytes: int = _opt(
        256 * 2**20, "with --serve: the held results' items, in bytes; past it, dropped as above", 1
    )

    def __post_init__(self) -> None:
        if self.politeness_key not in ("host", "domain", "ip"):
            raise SettingsError(
                f"setting politeness_key={self.politeness_key!r} must be 'host', 'domain' or 'ip'"
            )
        if "" in self.feed_fields or len(set(self.feed_fields)) < len(self.feed_fields):
            raise SettingsError(
                f"setting feed_fields={','.join(self.feed_fields)!r} has an empty or repeated "
                "field name; give each field once"
            )
        for f in dataclasses.fields(self):
            minimum = f.metadata.get("min")
            value = getattr(self, f.name)
            # ``not >=`` also catches NaN, which compares false with everything.
            if minimum is not None and not value >= minimum:
                raise SettingsError(f"setting {f.name}={value!r} is below its minimum {minimum}")

    @classmethod
    def merge(cls, *layers: Mapping[str, Any]) -> Settings:
        """Settings from ``layers``, later ones winning; strings are converted by type.
        Scrapy's names (``DOWNLOAD_DELAY``, ``CONCURRENT_REQUESTS`` ...) are read as the
        spiderfarm settings they match (see ``SCRAPY_SETTINGS``)."""
        merged: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                if key.isupper():
                    translated = _from_scrapy(key, value)
                    if translated is None:
                        continue
                    key, value = translated
                merged[key] = _convert(key, value)
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) for every setting, for ``--help`` and the README."""
        return [(f.name, repr(f.default), f.metadata["help"]) for f in dataclasses.fields(cls)]


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}

#: Scrapy's setting names and the spiderfarm settings they are read as (same units).
SCRAPY_SETTINGS: dict[str, str] = {
    "AUTOTHROTTLE_ENABLED": "autothrottle",
    "AUTOTHROTTLE_MAX_DELAY": "autothrottle_max_delay_s",
    "AUTOTHROTTLE_TARGET_CONCURRENCY": "autothrottle_target_concurrency",
    "CLOSESPIDER_ITEMCOUNT": "max_items",
    "CLOSESPIDER_PAGECOUNT": "max_pages",
    "CLOSESPIDER_TIMEOUT": "max_seconds",
    "CONCURRENT_REQUESTS": "concurrency",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "per_host_concurrency",
    "COOKIES_ENABLED": "cookies_enabled",
    "DEFAULT_REQUEST_HEADERS": "default_headers",
    "DEPTH_LIMIT": "depth_limit",
    "DEPTH_PRIORITY": "depth_priority",
    "DOWNLOADER_MIDDLEWARES": "downloader_middlewares",
    "DOWNLOAD_DELAY": "delay_s",
    "DOWNLOAD_MAXSIZE": "max_body_bytes",
    "DOWNLOAD_TIMEOUT": "timeout_s",
    "FEED_EXPORT_FIELDS": "feed_fields",
    "HTTPERROR_ALLOWED_CODES": "handle_httpstatus_list",
    "ITEM_PIPELINES": "item_pipelines",
    "MAX_IDLE_TIME_BEFORE_CLOSE": "idle_close_s",  # scrapy-redis
    "RANDOMIZE_DOWNLOAD_DELAY": "randomize_delay",
    "REDIRECT_MAX_TIMES": "max_redirects",
    "RETRY_HTTP_CODES": "retry_http_codes",
    "RETRY_TIMES": "max_retries",
    "ROBOTSTXT_OBEY": "obey_robots",
    "USER_AGENT": "user_agent",
}
#: Scrapy settings about its logging, project layout or reactor: nothing to do here.
SCRAPY_IGNORED = frozenset({
    "BOT_NAME", "LOG_ENABLED", "LOG_FILE", "LOG_FORMAT", "LOG_LEVEL", "NEWSPIDER_MODULE",
    "REQUEST_FINGERPRINTER_IMPLEMENTATION", "SPIDER_MODULES", "TELNETCONSOLE_ENABLED",
    "TWISTED_REACTOR", "ASYNCIO_EVENT_LOOP", "FEED_EXPORT_ENCODING",
})  # fmt: skip


def _from_scrapy(key: str, value: Any) -> tuple[str, Any] | None:
    """A Scrapy setting as ``(our name, value)``; None for one that does not apply here.

    Raises:
        SettingsError: a Scrapy setting spiderfarm has no counterpart for.
    """
    if key in SCRAPY_IGNORED:
        logger.info("Scrapy setting %s does not apply to spiderfarm; ignored", key)
        return None
    if key == "RETRY_ENABLED":
        try:
            enabled = _to_bool(value)
        except ValueError as exc:
            raise SettingsError(f"bad value {value!r} for Scrapy setting {key!r}: {exc}") from None
        return "max_retries", _FIELDS["max_retries"].default if enabled else 0
    name = SCRAPY_SETTINGS.get(key)
    if name is None:
        close = difflib.get_close_matches(key, SCRAPY_SETTINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SettingsError(
            f"Scrapy setting {key!r} has no spiderfarm counterpart{hint} (the README's "
            "'Coming from Scrapy' table lists those that do)"
        )
    if name in ("downloader_middlewares", "item_pipelines") and isinstance(value, Mapping):
        # Scrapy's {path: order} (None disables): in order; Scrapy's own components are
        # built into spiderfarm (or not available) and cannot be imported.
        chosen = sorted((order, path) for path, order in value.items() if order is not None)
        own = [path for _, path in chosen if not path.startswith("scrapy.")]
        if len(own) < len(chosen):
            logger.info("%s: Scrapy's built-in components are spiderfarm's own; skipped", key)
        value = tuple(own)
    return name, value


def _convert(key: str, value: Any) -> Any:
    f = _FIELDS.get(key)
    if f is None:
        close = difflib.get_close_matches(key, _FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SettingsError(
            f"unknown setting {key!r}{hint} (see `python -m spiderfarm crawl --help` for the list)"
        )
    kind = f.type if isinstance(f.type, str) else str(f.type)
    if value is None and f.default is None:
        return None
    try:
        if kind == "bool":
            return _to_bool(value)
        if kind in ("int", "float"):
            if isinstance(value, bool) or value is None:
                raise ValueError(f"expected a number, got {value!r}")
            number = float(value)
            if kind == "float":
                return number
            if not number.is_integer():
                raise ValueError("expected a whole number")
            return int(number)
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            return value
        if kind.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if kind == "tuple[str, ...]":
                return tuple(str(v) for v in value)
            return tuple(int(v) for v in value)
        if kind.startswith("dict"):
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return {str(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"bad value {value!r} for setting {key!r} ({kind}): {exc}") from None
    raise AssertionError(f"setting {key} has unhandled type {kind}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError("expected true or false")
        return lowered in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def parse_key_values(pairs: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; ``what`` names the option in errors."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{what} expects KEY=VALUE, got {pair!r}")
        result[key.strip()] = value
    return result
