"""XMLFeedSpider and CSVFeedSpider as Scrapy users write them.

The one change from a Scrapy project is the import line.
"""

import spiderfarm as scrapy


class ShopRssSpider(scrapy.spiders.XMLFeedSpider):
    name = "shop_rss"
    start_urls = ["http://127.0.0.1:8000/feed.rss"]
    itertag = "item"
    namespaces = [("dc", "http://purl.org/dc/elements/1.1/")]

    def parse_node(self, response, node):
        yield {
            "title": node.xpath("title/text()").get(),
            "link": node.xpath("link/text()").get(),
            "creator": node.xpath("dc:creator/text()").get(),
        }


class ShopCsvSpider(scrapy.spiders.CSVFeedSpider):
    name = "shop_csv"
    start_urls = ["http://127.0.0.1:8000/products.csv"]
    delimiter = ";"
    headers = ["sku", "name", "price"]

    def parse_row(self, response, row):
        yield {"sku": row["sku"], "name": row["name"], "price": float(row["price"])}
