"""Scrapy's ``scrapy.exceptions`` names, so ``from spiderfarm.exceptions import DropItem``
(or ``scrapy.exceptions.DropItem`` after ``import spiderfarm as scrapy``) works. The
classes live in ``errors.py``."""

from __future__ import annotations

from .errors import CloseSpider, DropItem, IgnoreRequest, NotSupported

__all__ = ["CloseSpider", "DropItem", "IgnoreRequest", "NotSupported"]
