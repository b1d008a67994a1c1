"""``Item`` and ``Field``: Scrapy's declared items (``scrapy.item``). An item class lists
its fields; an item is a mutable mapping that refuses any other key.

Items are written to the feed in their declared field order (see ``spiderfarm.items``).
"""

from __future__ import annotations

from abc import ABCMeta
from collections.abc import Iterator, KeysView, MutableMapping
from copy import deepcopy
from pprint import pformat
from typing import Any, ClassVar, NoReturn, Self

__all__ = ["Field", "Item", "ItemMeta"]


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
