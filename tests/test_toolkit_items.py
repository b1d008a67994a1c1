"""``Item``/``Field``, every item type itemadapter knows in ``encode_item``, ``ItemLoader``
with processors, and a CSV feed whose columns are an Item's declared fields (issue 13)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import pydantic
import pytest
from itemadapter import ItemAdapter
from itemloaders.processors import Join, MapCompose, TakeFirst

import spiderfarm
from spiderfarm import Field, HtmlResponse, Item, JsonResponse, Request, Response
from spiderfarm.exporters import CsvFeed
from spiderfarm.items import encode_item, is_item
from spiderfarm.loader import ItemLoader
from tests.farm import run_cli
from tests.sites import subprocess_environ

pytestmark = pytest.mark.timeout(180)

SPIDERS = Path(__file__).parent / "toolkit_spiders"


class Product(Item):
    name = Field()
    price = Field(serializer=str)
    tags = Field()


class Book(Product):
    isbn = Field()
    name = Field(doc="redefined: keeps its place, takes this metadata")


@dataclasses.dataclass
class Point:
    y: int
    x: int


@attrs.define
class AttrsItem:
    zeta: str
    alpha: Any = None


class PydanticItem(pydantic.BaseModel):
    zeta: str
    alpha: float = 0.0
    inner: AttrsItem | None = None

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)


# -- Item and Field ------------------------------------------------------------------


def test_fields_are_declared_in_definition_order_bases_first() -> None:
    assert spiderfarm.Item is Item and spiderfarm.Field is Field
    assert list(Product.fields) == ["name", "price", "tags"]
    assert list(Book.fields) == ["name", "price", "tags", "isbn"]
    assert Book.fields["name"] == {"doc": "redefined: keeps its place, takes this metadata"}
    assert Product.fields["price"] == {"serializer": str}
    assert isinstance(Product.fields["name"], dict)
    assert not hasattr(Product, "name")  # fields are not class attributes, as in Scrapy


def test_item_is_a_mapping_of_declared_fields() -> None:
    book = Book(name="Dune", isbn="978")
    book["price"] = 9
    assert dict(book) == {"name": "Dune", "isbn": "978", "price": 9}
    assert len(book) == 3 and "tags" not in book and book.get("tags") is None
    assert book == {"name": "Dune", "isbn": "978", "price": 9}
    del book["isbn"]
    assert list(book.keys()) == ["name", "price"]
    assert repr(Product(name="x")) == "{'name': 'x'}"
    assert {Product(): 1}  # hashable by identity, as Scrapy's


def test_unknown_fields_are_refused_with_a_clear_message() -> None:
    product = Product()
    with pytest.raises(KeyError, match=r"Product does not support field: nmae \(its fields: "
                       r"name, price, tags; declare it with nmae = Field\(\)\)"):  # fmt: skip
        product["nmae"] = "x"
    with pytest.raises(KeyError, match="Product does not support field: colour"):
        Product(colour="red")
    with pytest.raises(KeyError, match="Product does not support field: nope"):
        product["nope"]
    with pytest.raises(KeyError) as unset:
        product["name"]  # declared but not set: a plain KeyError, as a dict gives
    assert unset.value.args == ("name",)
    with pytest.raises(AttributeError, match=r"Use item\['name'\] to get field value"):
        product.name  # noqa: B018
    with pytest.raises(AttributeError, match=r"Use item\['name'\] = 'x' to set field value"):
        product.name = "x"
    with pytest.raises(AttributeError, match=r"^other$"):
        product.other  # noqa: B018


def test_items_copy_and_pickle() -> None:
    book = Book(name="Dune", tags=["sf"])
    shallow, deep = book.copy(), book.deepcopy()
    assert type(shallow) is Book and shallow == book and shallow["tags"] is book["tags"]
    assert deep["tags"] == ["sf"] and deep["tags"] is not book["tags"]
    assert copy.deepcopy(book) == book
    back = pickle.loads(pickle.dumps(book))
    assert type(back) is Book and back == book


def test_itemadapter_knows_spiderfarm_items() -> None:
    from spiderfarm.items import item_adapter

    adapter_cls = item_adapter()
    assert adapter_cls is ItemAdapter
    assert ItemAdapter.is_item(Book()) and ItemAdapter.is_item_class(Book)
    assert not ItemAdapter.is_item(Book)
    adapter = ItemAdapter(Book(isbn="1"))
    assert list(adapter.field_names()) == ["name", "price", "tags", "isbn"]
    assert ItemAdapter.get_field_meta_from_class(Product, "price") == MappingProxyType(
        {"serializer": str}
    )
    adapter["name"] = "n"
    assert adapter.asdict() == {"isbn": "1", "name": "n"}


# -- encode_item: every item type, in field order, still strict ----------------------


def test_items_encode_in_declared_field_order() -> None:
    book = Book()
    book["isbn"] = "978"
    book["tags"] = ("a", "b")
    book["name"] = "Dune"
    assert encode_item(book) == '{"name": "Dune", "tags": ["a", "b"], "isbn": "978"}'
    assert encode_item(Point(y=1, x=2)) == '{"y": 1, "x": 2}'
    assert encode_item(AttrsItem(zeta="z", alpha=1)) == '{"zeta": "z", "alpha": 1}'
    assert encode_item(PydanticItem(zeta="z")) == '{"zeta": "z", "alpha": 0.0, "inner": null}'
    assert encode_item(MappingProxyType({"b": 1, "a": 2})) == '{"b": 1, "a": 2}'


def test_nested_items_of_any_kind_encode() -> None:
    nested = {
        "book": Book(name="Dune"),
        "points": [Point(1, 2)],
        "model": PydanticItem(zeta="z", inner=AttrsItem("in")),
    }
    assert json.loads(encode_item(nested)) == {
        "book": {"name": "Dune"},
        "points": [{"y": 1, "x": 2}],
        "model": {"zeta": "z", "alpha": 0.0, "inner": {"zeta": "in", "alpha": None}},
    }
    assert encode_item(Product(name=Book(isbn="1"))) == '{"name": {"isbn": "1"}}'


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (Product(price=float("nan")), "NaN or an infinity"),
        (AttrsItem("z", float("inf")), "NaN or an infinity"),
        (PydanticItem(zeta="z", alpha=float("-inf")), "NaN or an infinity"),
        (Product(name="\ud800"), "which UTF-8 cannot encode"),
        (AttrsItem("\udfff"), "which UTF-8 cannot encode"),
    ],
)
def test_new_item_kinds_keep_encode_items_strictness(item: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_item(item)


def test_deep_and_bad_items_are_refused() -> None:
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = {"d": deep}
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_item(Product(name=deep))
    with pytest.raises(TypeError, match=r"callback yielded int 3; yield items"):
        encode_item(3)
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        encode_item(Product(name=object()))


def test_is_item() -> None:
    for item in ({}, Product(), Point(1, 2), AttrsItem("z"), PydanticItem(zeta="z")):
        assert is_item(item), item
    for other in ("text", b"bytes", 3, None, Product, AttrsItem, [1], Request("http://a.test/")):
        assert not is_item(other), other


# -- ItemLoader ----------------------------------------------------------------------

QUOTE_PAGE = """<html><body>
<div class="quote"><span class="text"> \u201cFirst.\u201d </span><small>Ann</small>
  <a class="tag">x</a><a class="tag">y</a></div>
<div class="quote"><span class="text">\u201cSecond.\u201d</span><small>Bob</small></div>
<p id="price">Price: 12.50 EUR</p>
</body></html>"""


class Quote(Item):
    text = Field(input_processor=MapCompose(str.strip, lambda s: s.strip("\u201c\u201d")))
    author = Field(output_processor=Join(" & "))
    tags = Field()
    price = Field(input_processor=MapCompose(float))


class QuoteLoader(ItemLoader):
    default_item_class = Quote
    default_output_processor = TakeFirst()


def quote_page() -> HtmlResponse:
    url = "http://quotes.test/page/1/"
    return HtmlResponse(url, 200, {"Content-Type": "text/html"}, QUOTE_PAGE.encode(), Request(url))


def test_loader_bound_to_a_response_uses_field_processors() -> None:
    response = quote_page()
    loader = QuoteLoader(response=response)
    assert loader.selector is response.selector  # no second parse
    assert loader.context["response"] is response
    loader.add_css("text", "div.quote span.text::text")
    loader.add_xpath("author", "//small/text()")
    loader.add_css("tags", "a.tag::text")
    loader.add_css("price", "#price::text", re=r"(\d+\.\d+)")
    item = loader.load_item()
    assert type(item) is Quote
    # TakeFirst by default; Join for author; MapCompose input processors ran on each value.
    assert dict(item) == {"text": "First.", "author": "Ann & Bob", "tags": "x", "price": 12.5}
    assert list(json.loads(encode_item(item))) == ["text", "author", "tags", "price"]


def test_loader_per_selector_and_nested() -> None:
    response = quote_page()
    items = []
    for quote in response.css("div.quote"):
        loader = QuoteLoader(selector=quote)
        loader.add_css("text", "span.text::text")
        loader.add_value("tags", quote.css("a.tag::text").getall() or ["none"])
        items.append(dict(loader.load_item()))
    assert items == [{"text": "First.", "tags": "x"}, {"text": "Second.", "tags": "none"}]
    nested = QuoteLoader(response=response).nested_css("div.quote")
    nested.add_css("author", "small::text")
    assert dict(nested.load_item()) == {"author": "Ann & Bob"}


def test_loader_fills_other_item_types() -> None:
    @dataclasses.dataclass
    class Row:
        text: list[str] = dataclasses.field(default_factory=list)
        author: str = ""

    loader = ItemLoader(item=Row(), response=quote_page())
    loader.default_output_processor = TakeFirst()
    loader.add_css("author", "small::text")
    row = loader.load_item()
    assert row == Row(text=[], author="Ann")
    plain = ItemLoader(item={}, response=quote_page())
    plain.add_css("authors", "small::text")
    assert plain.load_item() == {"authors": ["Ann", "Bob"]}


def test_loader_on_json_and_binary_responses() -> None:
    url = "http://api.test/x"
    data = JsonResponse(
        url, 200, {"Content-Type": "application/json"}, b'{"n": [1, 2]}', Request(url)
    )
    loader = ItemLoader(item={}, response=data)
    loader.add_jmes("n", "n[]")
    assert loader.load_item() == {"n": [1, 2]}
    binary = Response(url, 200, {"Content-Type": "image/png"}, b"\x89PNG", Request(url))
    loader = ItemLoader(item={}, response=binary)
    assert loader.selector is None
    loader.add_value("size", 4)
    assert loader.load_item() == {"size": [4]}
    with pytest.raises(RuntimeError, match="must be instantiated with a selector"):
        loader.add_css("x", "p")


def test_the_default_item_class_is_item_so_fields_must_be_declared() -> None:
    loader = ItemLoader()
    assert type(loader.item) is Item
    with pytest.raises(KeyError, match="Item does not support field: anything"):
        loader.add_value("anything", 1)


# -- CSV columns ---------------------------------------------------------------------


def csv_of(items: list[Any]) -> list[list[str]]:
    out = io.BytesIO()
    feed = CsvFeed("items.csv", out, 0, ())
    feed.write([encode_item(item) for item in items])
    return list(csv.reader(io.StringIO(out.getvalue().decode())))


def test_csv_columns_follow_the_first_items_declared_fields() -> None:
    set_backwards = Book()
    for key, value in (("isbn", "1"), ("tags", ["t"]), ("price", 3), ("name", "n")):
        set_backwards[key] = value
    assert csv_of([set_backwards, Book(name="m", isbn="2")]) == [
        ["name", "price", "tags", "isbn"],
        ["n", "3", '["t"]', "1"],
        ["m", "", "", "2"],
    ]
    assert csv_of([Point(y=1, x=2)]) == [["y", "x"], ["1", "2"]]
    assert csv_of([PydanticItem(zeta="z", alpha=1.5)]) == [
        ["zeta", "alpha", "inner"],
        ["z", "1.5", ""],
    ]


def test_a_crawl_loads_items_into_a_csv_in_field_order(
    quotes_site: str, tmp_path: Path, shared_dir: Path
) -> None:
    """``quotes_items``: a CrawlSpider loading ``QuoteItem``s with an ItemLoader and
    processors, a pipeline filling ``length`` through itemadapter, written as CSV."""
    out = tmp_path / "quotes.csv"
    result = run_cli(
        ["crawl", "quotes_items", "--spiders-dir", str(SPIDERS), "--workers", "2",
         "-a", f"start_urls={quotes_site}", "-o", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "crawl finished: 10 pages, 100 items, 0 errors" in result.stdout
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["text", "author", "tags", "length", "page"]
    truth = json.loads((shared_dir / "sites" / "quotes-groundtruth.json").read_text())
    expected = sorted(
        (q["text"].strip("\u201c\u201d"), q["author"], "|".join(q["tags"])) for q in truth["quotes"]
    )
    assert sorted((r[0], r[1], r[2]) for r in rows[1:]) == expected
    assert all(int(r[3]) == len(r[0]) for r in rows[1:])
    assert sorted(int(r[4]) for r in rows[1:]) == [p for p in range(1, 11) for _ in range(10)]


def test_itemadapter_knows_an_item_class_as_soon_as_it_is_declared() -> None:
    """A pipeline calling ``ItemAdapter(item)`` works in a fresh worker process, where
    nothing else has taught itemadapter the class; ``import spiderfarm`` alone does not
    import itemadapter (its ~0.1 s of attrs and pydantic)."""
    code = (
        "import sys, spiderfarm\n"
        "assert 'itemadapter' not in sys.modules\n"
        "class P(spiderfarm.Item):\n    a = spiderfarm.Field()\n"
        "from itemadapter import ItemAdapter\n"
        "print(ItemAdapter.is_item(P(a=1)), list(ItemAdapter(P(a=1)).field_names()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        env=subprocess_environ(),
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "True ['a']\n"), result.stderr
