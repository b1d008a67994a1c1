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
    """An item as one JSON line. Items are dicts (or mappings, or dataclass instances).

    Raises:
        TypeError: the item is not a mapping or holds a value JSON cannot represent.
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
    return json.dumps(item, ensure_ascii=False, default=_json_default)


