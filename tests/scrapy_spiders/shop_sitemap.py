"""A SitemapSpider as Scrapy users write one: robots.txt, a sitemap index, gzipped
sitemaps, rules per URL pattern, alternate links and a lastmod filter.

The one change from a Scrapy project is the import line.
"""

import spiderfarm as scrapy


class ShopSitemapSpider(scrapy.spiders.SitemapSpider):
    name = "shop_sitemap"
    sitemap_urls = ["http://127.0.0.1:8000/robots.txt"]
    sitemap_rules = [("/product/", "parse_product"), ("/blog/", "parse_post")]
    sitemap_follow = [r"/sitemap-(products|blog|bomb)"]
    sitemap_alternate_links = True
    download_maxsize = 1024 * 1024  # the gzip bomb sitemap decompresses past this

    def sitemap_filter(self, entries):
        for entry in entries:
            if entry.get("lastmod", "9999") >= "2020":
                yield entry

    def parse_product(self, response):
        yield {"kind": "product", "url": response.url, "title": response.css("h1::text").get()}

    def parse_post(self, response):
        yield {"kind": "post", "url": response.url, "title": response.css("h1::text").get()}
