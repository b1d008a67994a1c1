"""What a callback gave, as an iterable of values (Scrapy's ``iterate_spider_output``)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from ..items import is_item
from ..request import Request

__all__ = ["iterate_spider_output"]


def iterate_spider_output(result: Any) -> Iterable[Any]:
    """``result`` as values: nothing for ``None``, itself for one ``Request`` or item (a
    dict, an ``Item``, a dataclass, attrs or pydantic object), else its values."""
    if result is None:
        return ()
    if isinstance(result, list | tuple) or inspect.isgenerator(result):
        return result
    if isinstance(result, Request | str | bytes) or is_item(result):
        return (result,)
    if hasattr(result, "__iter__"):
        return result  # type: ignore[no-any-return]
    return (result,)
