"""``Item`` and ``Field``: Scrapy's declared items (``scrapy.item``). An item class lists
its fields; an item is a mutable mapping that refuses any other key. ``itemadapter``
(what pipelines and ``ItemLoader`` read items through) is taught the class as soon as a
subclass is declared.

Items are written to the feed in their declared field order (see ``spiderfarm.items``).
"""

from __future__ import annotations

import threading
from abc import ABCMeta
from collections import deque
from collections.abc import Iterator, KeysView, MutableMapping
from copy import deepcopy
from pprint import pformat
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self, cast

if TYPE_CHECKING:
    from itemadapter import ItemAdapter

__all__ = ["Field", "Item", "ItemMeta", "item_adapter"]

_adapter_lock = threading.Lock()
_adapter: type[ItemAdapter] | None = None


def item_adapter() -> type[ItemAdapter]:
    """``itemadapter.ItemAdapter``, taught ``spiderfarm.Item`` (once per process).

    Imported on first use, not with this module: itemadapter imports attrs and pydantic
    when they are installed (about 0.1 s), which a crawl of dicts never needs.
    """
    global _adapter
    if _adapter is not None:
        return _adapter
    with _adapter_lock:
        if _adapter is None:
            from itemadapter import ItemAdapter
            from itemadapter.adapter import ScrapyItemAdapter

            class SpiderfarmItemAdapter(ScrapyItemAdapter):
                """``spiderfarm.Item`` as itemadapter sees ``scrapy.Item``."""

                @classmethod
                def is_item(cls, item: Any) -> bool:
                    return isinstance(item, Item)

                @classmethod
                def is_item_class(cls, item_class: type) -> bool:
                    return isinstance(item_class, type) and issubclass(item_class, Item)

                @classmethod
                def get_field_meta_from_class(
                    cls, item_class: type, field_name: str
                ) -> MappingProxyType[str, Any]:
                    fields = cast("type[Item]", item_class).fields
                    if field_name not in fields:
                        raise KeyError(
                            f"{item_class.__name__} does not support field: {field_name}"
                        )
                    return MappingProxyType(fields[field_name])

                @classmethod
                def get_field_names_from_class(cls, item_class: type) -> list[str] | None:
                    return list(cast("type[Item]", item_class).fields)

            cast("deque[Any]", ItemAdapter.ADAPTER_CLASSES).appendleft(SpiderfarmItemAdapter)
            _adapter = ItemAdapter
    return _adapter


class Field(dict[str, Any]):
    """A field's metadata (``Field(serializer=str, input_processor=...)``)."""


class ItemMeta(ABCMeta):
    """Collects an item class's ``Field`` attributes into its ``fields``, in definition
    order: the fields of base classes first (the topmost base's first), a field redefined
    in a subclass keeping the place of its first definition with the subclass's metadata."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> ItemMeta:
        declared = {k: v for k, v in namespace.items() if isinstance(v, Field)}
        attrs = {k: v for k, v in namespace.items() if not isinstance(v, Field)}
        attrs["_declared_fields"] = declared
        cls = super().__new__(mcs, name, bases, attrs, **kwargs)
        fields: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):
            for field_name in vars(klass).get("_declared_fields", {}):
                fields.setdefault(field_name, Field())
        for field_name in fields:  # the metadata of the most derived definition
            for klass in cls.__mro__:
                own = vars(klass).get("_declared_fields", {})
                if field_name in own:
                    fields[field_name] = own[field_name]
                    break
        # Set through type.__setattr__: Item.__setattr__ guards instances, not classes.
        type.__setattr__(cls, "fields", fields)
        if any(isinstance(base, ItemMeta) for base in bases):  # a user's item class
            item_adapter()
        return cls


class Item(MutableMapping[str, Any], metaclass=ItemMeta):
    """Subclass this and declare fields: ``name = Field()``. An item then behaves as a
    dict that accepts only those keys: ``item["nmae"] = ...`` raises ``KeyError`` naming
    the item class and its fields. ``fields`` holds every declared field, set or not,
    in definition order."""

    fields: ClassVar[dict[str, Field]]
    _declared_fields: ClassVar[dict[str, Field]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._values: dict[str, Any] = {}
        if args or kwargs:
            for key, value in dict(*args, **kwargs).items():
                self[key] = value

    def _unknown(self, key: object) -> KeyError:
        known = ", ".join(self.fields) or "none"
        return KeyError(
            f"{type(self).__name__} does not support field: {key} "
            f"(its fields: {known}; declare it with {key} = Field())"
        )

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            if key in self.fields:
                raise KeyError(key) from None  # declared, not set: as a dict says
            raise self._unknown(key) from None

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.fields:
            raise self._unknown(key)
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __getattr__(self, name: str) -> NoReturn:
        if name in type(self).fields:
            raise AttributeError(f"Use item[{name!r}] to get field value")
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            raise AttributeError(f"Use item[{name!r}] = {value!r} to set field value")
        super().__setattr__(name, value)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def keys(self) -> KeysView[str]:
        return self._values.keys()

    # Items are compared by identity and may be set members, as Scrapy's are.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return pformat(dict(self))

    def copy(self) -> Self:
        return type(self)(self)

    def deepcopy(self) -> Self:
        return deepcopy(self)
