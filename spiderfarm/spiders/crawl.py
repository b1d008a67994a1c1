"""``CrawlSpider`` and ``Rule``: a spider that follows the links its rules extract
(Scrapy's ``scrapy.spiders.CrawlSpider``: the same rule order, defaults and hooks).

On a farm the rules never travel. Every worker compiles them from the spider class when
its spider is made; a followed link's request carries only its rule's *index* in
``meta["rule"]`` (and the link text in ``meta["link_text"]``) and the internal callback
``_callback`` by name, so rules may hold any callable, lambdas included.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from ..errors import FetchError, SpiderLoadError
from ..link import Link
from ..linkextractors import LinkExtractor
from ..request import InvalidRequest, Request
from ..response import HtmlResponse, Response
from ..spider import Spider
from .output import iterate_spider_output

logger = logging.getLogger(__name__)

__all__ = ["CrawlSpider", "Rule"]

ProcessLinks: TypeAlias = Callable[[list[Link]], Iterable[Link]]
ProcessRequest: TypeAlias = Callable[[Request, Response], Request | None]


def _identity(links: list[Link]) -> list[Link]:
    return links


def _identity_process_request(request: Request, response: Response) -> Request | None:
    return request


_default_link_extractor = LinkExtractor()


class Rule:
    """How a ``CrawlSpider`` treats links: the ``link_extractor`` finds them (default:
    every link), ``process_links(links)`` may filter them, ``process_request(request,
    response)`` may change or drop (``None``) each request, and the page it fetches goes
    to ``callback(response, **cb_kwargs)``; ``follow`` (default: only when there is no
    callback) applies the rules to that page too. ``errback(failure)`` runs when the
    request fails for good. Callables may be given as the names of spider methods."""

    def __init__(
        self,
        link_extractor: LinkExtractor | None = None,
        callback: Callable[..., Any] | str | None = None,
        cb_kwargs: dict[str, Any] | None = None,
        follow: bool | None = None,
        process_links: ProcessLinks | str | None = None,
        process_request: ProcessRequest | str | None = None,
        errback: Callable[[FetchError], Any] | str | None = None,
    ) -> None:
        self.link_extractor = link_extractor or _default_link_extractor
        self.callback = callback
        self.errback = errback
        self.cb_kwargs = cb_kwargs or {}
        self.process_links: ProcessLinks | str = process_links or _identity
        self.process_request: ProcessRequest | str = process_request or _identity_process_request
        self.follow = follow if follow is not None else not callback

    def __repr__(self) -> str:
        return f"<Rule callback={self.callback!r} follow={self.follow!r}>"


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    """A ``Rule`` with its method names resolved against one spider instance."""

    link_extractor: LinkExtractor
    callback: Callable[..., Any] | None
    errback: Callable[[FetchError], Any] | None
    cb_kwargs: dict[str, Any]
    follow: bool
    process_links: ProcessLinks
    process_request: ProcessRequest


def _method(spider: Spider, value: Any, index: int, what: str) -> Any:
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        method = getattr(spider, value, None)
        if callable(method):
            return method
    raise SpiderLoadError(
        f"spider {spider.name!r}: rule {index} has {what}={value!r}, which is not a method "
        f"of {type(spider).__name__}; define it, or pass a callable"
    )


# Compiled rules by spider id. Kept off the instance so that the spider's state, which
# the server pickles for the workers, never carries them: each worker compiles its own.
_COMPILED: dict[int, tuple[_CompiledRule, ...]] = {}


class CrawlSpider(Spider):
    """Set ``rules`` (a sequence of ``Rule``); write ``parse_start_url`` to take items
    from the start pages too. Responses to start requests are parsed by the rules (with
    ``follow=True``); do not name a callback ``parse``: requests without a callback go to
    ``parse``, which runs the rules here."""

    rules: ClassVar[Sequence[Rule]] = ()
    _follow_links: ClassVar[bool] = True

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self._compile_rules()

    def _compile_rules(self) -> None:
        compiled = []
        for index, rule in enumerate(self.rules):
            compiled.append(
                _CompiledRule(
                    link_extractor=rule.link_extractor,
                    callback=_method(self, rule.callback, index, "callback"),
                    errback=_method(self, rule.errback, index, "errback"),
                    cb_kwargs=dict(rule.cb_kwargs),
                    follow=rule.follow,
                    process_links=_method(self, rule.process_links, index, "process_links"),
                    process_request=_method(self, rule.process_request, index, "process_request"),
                )
            )
        if id(self) not in _COMPILED:
            weakref.finalize(self, _COMPILED.pop, id(self), None)
        _COMPILED[id(self)] = tuple(compiled)

    @property
    def _rules(self) -> tuple[_CompiledRule, ...]:
        return _COMPILED[id(self)]

    def start_requests(self) -> Iterable[Request]:
        for url in self.start_urls:
            yield Request(url, callback=self._parse)

    def parse(self, response: Response, **kwargs: Any) -> Any:
        """A request without a callback: the start pages' treatment (``_parse``)."""
        return self._parse(response, **kwargs)

    def _parse(self, response: Response, **kwargs: Any) -> AsyncIterator[Any]:
        return self._parse_response(response, self.parse_start_url, kwargs, follow=True)

    def parse_start_url(self, response: Response, **kwargs: Any) -> Any:
        """Items and requests from a start page (none by default)."""
        return []

    def process_results(self, response: Response, results: Iterable[Any]) -> Iterable[Any]:
        """Every rule callback's results pass through here (unchanged by default)."""
        return results

    def _build_request(self, rule_index: int, link: Link, trusted: bool = False) -> Request:
        """The request for a rule's link; ``trusted``: its URL came from a LinkExtractor
        untouched (every URL it returns is one safe_url leaves as it is), so no Request
        validation is needed again."""
        if trusted:
            request = Request._trusted(link.url, "_callback")
            request.errback = "_errback"
            request.meta = {"rule": rule_index, "link_text": link.text}
            return request
        return Request(
            url=link.url,
            callback=self._callback,
            errback=self._errback,
            meta={"rule": rule_index, "link_text": link.text},
        )

    def _requests_to_follow(self, response: Response) -> Iterator[Request]:
        if not isinstance(response, HtmlResponse):
            return
        seen: set[Link] = set()
        for index, rule in enumerate(self._rules):
            links = [
                link for link in rule.link_extractor.extract_links(response) if link not in seen
            ]
            extractor = rule.link_extractor
            trusted = (
                rule.process_links is _identity
                and type(extractor) is LinkExtractor
                and not extractor.canonicalize
            )
            for link in rule.process_links(links):
                seen.add(link)
                try:
                    request = self._build_request(index, link, trusted)
                except InvalidRequest as exc:  # a URL process_links made unusable
                    logger.debug("rule %d: skipping link on %s: %s", index, response.url, exc)
                    continue
                processed = rule.process_request(request, response)
                if processed is not None:
                    yield processed

    def _callback(self, response: Response, **cb_kwargs: Any) -> AsyncIterator[Any]:
        rule = self._rules[response.meta["rule"]]
        return self._parse_response(
            response, rule.callback, {**rule.cb_kwargs, **cb_kwargs}, rule.follow
        )

    def _errback(self, failure: FetchError) -> Iterable[Any]:
        request: Request = failure.request  # type: ignore[attr-defined]
        rule = self._rules[(request.meta or {})["rule"]]
        if rule.errback is None:
            return ()
        return iterate_spider_output(rule.errback(failure))

    async def _parse_response(
        self,
        response: Response,
        callback: Callable[..., Any] | None,
        cb_kwargs: dict[str, Any],
        follow: bool = True,
    ) -> AsyncIterator[Any]:
        if callback is not None:
            result = callback(response, **cb_kwargs)
            if inspect.isasyncgen(result):
                result = [value async for value in result]
            elif inspect.isawaitable(result):
                result = await result
            results = self.process_results(response, iterate_spider_output(result))
            for value in iterate_spider_output(results):
                yield value
        if follow and self._follow_links:
            for request in self._requests_to_follow(response):
                yield request
