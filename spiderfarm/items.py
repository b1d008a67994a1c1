"""Items as the feed receives them: one JSON line each, encoded where they are made."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["encode_item", "is_item"]


def is_item(value: Any) -> bool:
    """Whether a callback's (or ``start()``'s) value is an item: a dict, another mapping or
    a dataclass instance."""
    return isinstance(value, dict | Mapping) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_item(item: Any) -> str:
    """An item as one JSON line, exactly as the feed will write it (UTF-8, strict JSON).
    Items are dicts (or mappings, or dataclass instances).

    Raises:
        TypeError: the item is not a mapping or holds a value JSON cannot represent.
        ValueError: it holds ``NaN`` or an infinity (strict JSON readers reject them),
            a string UTF-8 cannot encode (a lone surrogate such as ``"\\ud800"``), or is
            nested too deeply to encode.
    """
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        item = dataclasses.asdict(item)
    elif not isinstance(item, dict):
        if not isinstance(item, Mapping):
            raise TypeError(
                f"callback yielded {type(item).__name__} {item!r:.80}; "
                "yield dicts (items) or Requests"
            )
        item = dict(item)
    try:
        line = json.dumps(item, ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise ValueError(
                f"item holds NaN or an infinity, which JSON cannot hold ({exc})"
            ) from None
        raise ValueError(f"item cannot be encoded as JSON: {exc}") from None
    except RecursionError:
        raise ValueError("item is nested too deeply to encode as JSON") from None
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end]
            raise ValueError(
                f"item holds {bad!r}, which UTF-8 cannot encode (a lone surrogate: "
                "decode text with errors='replace' or strip it)"
            ) from None
    return line
