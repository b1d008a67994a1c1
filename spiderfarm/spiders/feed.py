"""``XMLFeedSpider`` and ``CSVFeedSpider``: spiders that call a method per node of an XML
feed or per row of a CSV file (Scrapy's ``scrapy.spiders.feed``)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Sequence
from io import BytesIO, StringIO
from typing import Any, ClassVar, Literal

from lxml import etree

from ..request import Request
from ..response import HtmlResponse, Response, TextResponse, XmlResponse
from ..selector import Selector
from ..spider import Spider
from .output import iterate_spider_output

logger = logging.getLogger(__name__)

__all__ = ["CSVFeedSpider", "XMLFeedSpider"]


def _text_of(response: Response) -> str:
    if isinstance(response, TextResponse):
        return response.text
    return response.body.decode("utf-8", "replace")


def xmliter(response: Response, nodename: str) -> Iterator[Selector]:
    """A selector for each ``nodename`` element of the feed, parsed as it streams
    (``"prefix:name"`` finds the prefix's namespace in the document). Entities are not
    resolved and lxml's huge-tree limits stay on."""
    encoding = response.encoding if isinstance(response, TextResponse) else "utf-8"
    namespace: str | None = None
    prefix = "x"
    needs_namespace = ":" in nodename
    if needs_namespace:
        prefix, nodename = nodename.split(":", 1)
    tag, selxpath = nodename, "//" + nodename
    events = etree.iterparse(
        BytesIO(response.body.lstrip()),
        events=("end", "start-ns"),
        encoding=encoding,
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
    )
    for event, data in events:
        if event == "start-ns":
            if needs_namespace and data[0] == prefix:
                namespace, needs_namespace = data[1], False
                tag, selxpath = f"{{{namespace}}}{nodename}", f"//{prefix}:{nodename}"
            continue
        if data.tag != tag:
            continue
        text = etree.tostring(data, encoding="unicode")
        data.clear()
        selector = Selector(text=text, type="xml")
        if namespace:
            selector.register_namespace(prefix, namespace)
        yield selector.xpath(selxpath)[0]


def csviter(
    response: Response,
    delimiter: str | None = None,
    headers: list[str] | None = None,
    quotechar: str | None = None,
) -> Iterator[dict[str, str]]:
    """A dict per row of a CSV body, keyed by ``headers`` (else its first row); a row
    of another length is skipped with a warning."""
    kwargs: dict[str, Any] = {}
    if delimiter:
        kwargs["delimiter"] = delimiter
    if quotechar:
        kwargs["quotechar"] = quotechar
    reader = csv.reader(StringIO(_text_of(response)), **kwargs)
    if not headers:
        try:
            headers = next(reader)
        except StopIteration:
            return
    for row in reader:
        if len(row) != len(headers):
            logger.warning(
                "ignoring row %d of %s (length: %d, should be: %d)",
                reader.line_num, response.url, len(row), len(headers),
            )  # fmt: skip
            continue
        yield dict(zip(headers, row, strict=True))


class _FeedSpider(Spider):
    """What the XML and CSV feed spiders share: start URLs parsed by ``_parse``, and
    Scrapy's two hooks around it."""

    def start_requests(self) -> Iterable[Request]:
        for url in self.start_urls:
            yield Request(url, callback=self._parse)

    def parse(self, response: Response, **kwargs: Any) -> Any:
        """A request without a callback: the feed is parsed node by node (row by row)."""
        return self._parse(response, **kwargs)

    def process_results(self, response: Response, results: Iterable[Any]) -> Iterable[Any]:
        """Each node's (row's) results pass through here (unchanged by default)."""
        return results

    def adapt_response(self, response: Response) -> Response:
        """The response to parse (this one by default)."""
        return response

    def _parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        raise NotImplementedError


class XMLFeedSpider(_FeedSpider):
    """Write ``parse_node(response, selector)``: it is called for every ``itertag``
    element of the start pages. ``iterator`` is ``"iternodes"`` (streamed, the default),
    ``"xml"`` or ``"html"`` (the whole page parsed); ``namespaces`` are ``(prefix, uri)``
    pairs registered on each selector."""

    iterator: ClassVar[Literal["iternodes", "xml", "html"]] = "iternodes"
    itertag: ClassVar[str] = "item"
    namespaces: ClassVar[Sequence[tuple[str, str]]] = ()

    def parse_node(self, response: Response, selector: Selector) -> Any:
        """Items and requests for one node; override it."""
        if hasattr(self, "parse_item"):  # Scrapy's old name
            return self.parse_item(response, selector)
        raise NotImplementedError(f"spider {self.name!r}: define parse_node(response, selector)")

    def parse_nodes(self, response: Response, nodes: Iterable[Selector]) -> Iterator[Any]:
        for selector in nodes:
            results = iterate_spider_output(self.parse_node(response, selector))
            yield from iterate_spider_output(self.process_results(response, results))

    def _parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        response = self.adapt_response(response)
        nodes: Iterable[Selector]
        if self.iterator == "iternodes":
            nodes = self._iternodes(response)
        elif self.iterator in ("xml", "html"):
            if not isinstance(response, TextResponse):
                raise ValueError(f"Response content isn't text: {response.url}")
            wanted = XmlResponse if self.iterator == "xml" else HtmlResponse
            selector = (
                response.selector
                if type(response) is wanted
                else Selector(text=response.text, type=self.iterator)
            )
            self._register_namespaces(selector)
            nodes = selector.xpath(f"//{self.itertag}")
        else:
            raise ValueError(
                f"spider {self.name!r}: unsupported node iterator {self.iterator!r}; "
                "use 'iternodes', 'xml' or 'html'"
            )
        return self.parse_nodes(response, nodes)

    def _iternodes(self, response: Response) -> Iterator[Selector]:
        for node in xmliter(response, self.itertag):
            self._register_namespaces(node)
            yield node

    def _register_namespaces(self, selector: Selector) -> None:
        for prefix, uri in self.namespaces:
            selector.register_namespace(prefix, uri)


class CSVFeedSpider(_FeedSpider):
    """Write ``parse_row(response, row)``: it is called with a dict for every row of the
    start pages' CSV (keyed by ``headers``, else the first row), read with ``delimiter``
    and ``quotechar`` (the csv module's defaults when ``None``)."""

    delimiter: ClassVar[str | None] = None
    quotechar: ClassVar[str | None] = None
    headers: ClassVar[list[str] | None] = None

    def parse_row(self, response: Response, row: dict[str, str]) -> Any:
        """Items and requests for one row; override it."""
        raise NotImplementedError(f"spider {self.name!r}: define parse_row(response, row)")

    def parse_rows(self, response: Response) -> Iterator[Any]:
        for row in csviter(response, self.delimiter, self.headers, quotechar=self.quotechar):
            results = iterate_spider_output(self.parse_row(response, row))
            yield from iterate_spider_output(self.process_results(response, results))

    def _parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        return self.parse_rows(self.adapt_response(response))
