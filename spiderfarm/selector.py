"""Scrapy's ``Selector``: parsel's, under the names Scrapy users import
(``from spiderfarm import Selector`` / ``scrapy.Selector``). Build one from text
(``Selector(text=html)``) or take ``response.selector``."""

from __future__ import annotations

from parsel import Selector, SelectorList

__all__ = ["Selector", "SelectorList"]
