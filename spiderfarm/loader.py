"""``ItemLoader``: itemloaders' loader bound to a response (Scrapy's ``scrapy.loader``).

Processors come from ``itemloaders.processors`` (``TakeFirst``, ``MapCompose``, ``Join``
...), as in Scrapy; a field's ``input_processor``/``output_processor`` metadata in an
``Item``'s ``Field(...)`` (or a dataclass/attrs field's metadata) is honoured.
"""

from __future__ import annotations

from typing import Any

import itemloaders
import parsel

from .errors import NotSupported
from .item import Item
from .items import item_adapter
from .response import Response
from .selector import Selector

__all__ = ["ItemLoader"]

item_adapter()  # itemloaders reads fields through itemadapter: teach it spiderfarm.Item


class ItemLoader(itemloaders.ItemLoader):
    """Populates an item (``item``, else a new ``default_item_class()``) from
    ``add_css``/``add_xpath``/``add_jmes``/``add_value`` calls through each field's
    processors; ``load_item()`` returns it.

    With ``response`` and no ``selector``, selects on ``response.selector`` (the page is
    not parsed again); a response without one (binary) leaves the loader without a
    selector, so only ``add_value`` works. ``response`` is in ``loader.context``.
    A ``default_selector_class`` other than ``Selector`` (or parsel's) is built as
    ``cls(text=response.text)``.
    """

    default_item_class: type = Item
    default_selector_class: type = Selector

    def __init__(
        self,
        item: Any = None,
        selector: Selector | None = None,
        response: Response | None = None,
        parent: itemloaders.ItemLoader | None = None,
        **context: Any,
    ) -> None:
        if selector is None and response is not None:
            try:
                if self.default_selector_class in (Selector, parsel.Selector):
                    selector = response.selector
                else:
                    selector = self.default_selector_class(text=response.text)
            except NotSupported:
                selector = None
        context.update(response=response)
        super().__init__(item=item, selector=selector, parent=parent, **context)
