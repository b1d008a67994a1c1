"""Scrapy's spider classes (``scrapy.spiders``): ``Spider`` and the generic spiders
``CrawlSpider`` with its ``Rule``s, ``SitemapSpider``, ``XMLFeedSpider`` and
``CSVFeedSpider``."""

from __future__ import annotations

from ..spider import Spider
from .crawl import CrawlSpider, Rule
from .feed import CSVFeedSpider, XMLFeedSpider
from .sitemap import SitemapSpider

__all__ = ["CSVFeedSpider", "CrawlSpider", "Rule", "SitemapSpider", "Spider", "XMLFeedSpider"]
