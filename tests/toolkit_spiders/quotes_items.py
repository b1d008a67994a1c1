"""A CrawlSpider that loads declared Items with an ItemLoader and its processors, and a
pipeline that fills a field through itemadapter: its CSV feed's columns are the Item's
declared fields, in order."""

from itemadapter import ItemAdapter
from itemloaders.processors import Identity, Join, MapCompose, TakeFirst

from spiderfarm import Field, Item
from spiderfarm.linkextractors import LinkExtractor
from spiderfarm.loader import ItemLoader
from spiderfarm.spiders import CrawlSpider, Rule


class QuoteItem(Item):
    # Declared out of alphabetical order: the feed keeps this order.
    text = Field(input_processor=MapCompose(str.strip, lambda s: s.strip("\u201c\u201d")))
    author = Field()
    tags = Field(output_processor=Join("|"))
    length = Field()
    page = Field(input_processor=Identity())


class QuoteLoader(ItemLoader):
    default_item_class = QuoteItem
    default_output_processor = TakeFirst()


class LengthPipeline:
    def process_item(self, item, spider):
        adapter = ItemAdapter(item)
        adapter["length"] = len(adapter["text"])
        return item


class QuotesItemsSpider(CrawlSpider):
    name = "quotes_items"
    start_urls = ["http://127.0.0.1:8000/"]
    item_pipelines = [LengthPipeline]
    rules = [
        Rule(
            LinkExtractor(restrict_xpaths="//li[@class='next']", tags="a", attrs="href"),
            callback="parse_page",
            follow=True,
            cb_kwargs={"via": "rule"},
            process_links="keep_pages",
        ),
    ]

    def keep_pages(self, links):
        return [link for link in links if "/page/" in link.url]

    def parse_start_url(self, response):
        return self.parse_page(response, via="start")

    def parse_page(self, response, via):
        page = response.url.rstrip("/").rpartition("/")[2]
        for quote in response.css("div.quote"):
            loader = QuoteLoader(selector=quote, response=response)
            loader.add_css("text", "span.text::text")
            loader.add_css("author", "small.author::text")
            loader.add_css("tags", "a.tag::text")
            loader.add_value("page", 1 if via == "start" else int(page))
            yield loader.load_item()
