"""Items as the feed receives them: one JSON line each, encoded where they are made.

An item is anything ``itemadapter`` knows — a dict or other mapping, a dataclass, an
``attrs`` class, a pydantic model, a ``spiderfarm.Item`` — and is written in its declared
field order, so a CSV feed's columns follow the first item's class.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
from collections.abc import Mapping
from typing import Any

from .item import Item, item_adapter

__all__ = ["encode_item", "is_item", "item_adapter", "item_to_dict"]


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def is_item(value: Any) -> bool:
    """Whether a callback's (or ``start()``'s) value is an item: a dict, another mapping,
    a dataclass instance, or any other item ``itemadapter`` knows (attrs, pydantic)."""
    if isinstance(value, dict | Mapping) or _is_dataclass_instance(value):
        return True
    return not isinstance(value, str | bytes | type) and item_adapter().is_item(value)


def _ordered(item: Item) -> dict[str, Any]:
    """An ``Item``'s values in declared field order."""
    values = dict(item.items())
    return {k: values[k] for k in type(item).fields if k in values}


def item_to_dict(item: Any) -> dict[str, Any]:
    """The item as a dict, in its declared field order (dataclass, attrs and pydantic
    fields, ``Item.fields``; a mapping's own order).

    Raises:
        TypeError: ``item`` is not an item.
    """
    if isinstance(item, dict):
        return item
    if _is_dataclass_instance(item):
        return dataclasses.asdict(item)
    if isinstance(item, Item):
        return _ordered(item)
    if isinstance(item, Mapping):
        return dict(item)
    if not isinstance(item, str | bytes | type):
        adapter = item_adapter()
        if adapter.is_item(item):
            return adapter(item).asdict()
    raise TypeError(
        f"callback yielded {type(item).__name__} {item!r:.80}; yield items (dicts, "
        "dataclasses, attrs or pydantic objects, spiderfarm.Item) or Requests"
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
    if isinstance(value, Item):
        return _ordered(value)
    if isinstance(value, Mapping):
        return dict(value)
    if _is_dataclass_instance(value):
        return dataclasses.asdict(value)
    if not isinstance(value, str | type) and item_adapter().is_item(value):
        return item_adapter()(value).asdict()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_item(item: Any) -> str:
    """An item as one JSON line, exactly as the feed will write it (UTF-8, strict JSON),
    its keys in the item's declared field order.

    Raises:
        TypeError: the item is not an item or holds a value JSON cannot represent.
        ValueError: it holds ``NaN`` or an infinity (strict JSON readers reject them),
            a string UTF-8 cannot encode (a lone surrogate such as ``"\\ud800"``), or is
            nested too deeply to encode.
    """
    if not isinstance(item, dict):
        try:
            item = item_to_dict(item)
        except RecursionError:
            raise ValueError("item is nested too deeply to encode as JSON") from None
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
