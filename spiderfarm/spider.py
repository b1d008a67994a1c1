"""The ``Spider`` base class users subclass, and finding a spider by name or file."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from .errors import SpiderLoadError
from .http import Request, Response
from .stats import SpiderStats

__all__ = ["Spider", "load_spider"]


# Spider arguments that are lists: given as a string (``-a``), they are split on commas.
_LISTS = frozenset({"allowed_domains", "start_urls"})


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Spider:
    """Subclass this: set ``name`` and ``start_urls`` and write ``parse(response)``.

    A callback may be a plain function, a generator, a coroutine or an async generator;
    it yields (or returns) item dicts and ``Request``s.
    """

    name: ClassVar[str] = ""
    start_urls: ClassVar[Sequence[str]] = ()
    allowed_domains: Sequence[str] = ()  # may be set per instance, e.g. from an argument
    custom_settings: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **kwargs: str) -> None:
        # ``-a key=value`` spider arguments become attributes (Scrapy's convention), but
        # never replace a method: ``-a parse=1`` would break the crawl in a confusing way.
        for key, value in kwargs.items():
            method = callable(getattr(type(self), key, None))
            if key in ("logger", "stats") or not key.isidentifier() or method:
                raise SpiderLoadError(
                    f"spider argument {key!r} cannot be set on spider {self.name!r}: "
                    "it is not a valid name or would replace a method"
                )
            if key in _LISTS and isinstance(value, str):  # -a start_urls=URL,URL
                setattr(self, key, _split(value))
            else:
                setattr(self, key, value)
        if isinstance(self.allowed_domains, str):  # allowed_domains = "example.com"
            self.allowed_domains = _split(self.allowed_domains)
        self.logger = logging.getLogger(f"spiderfarm.spider.{self.name or type(self).__name__}")

    @property
    def stats(self) -> SpiderStats:
        """Scrapy's stats API (``self.stats.inc_value("key")``), merged farm-wide: see
        ``stats.SpiderStats``. Made on first use (a spider that counts nothing pays nothing)."""
        stats: SpiderStats | None = self.__dict__.get("_stats")
        if stats is None:
            stats = self.__dict__["_stats"] = SpiderStats()
        return stats

    async def start(self) -> AsyncIterator[Any]:
        """The first requests (and items), Scrapy 2.13's way: define it as an async
        generator to take over from ``start_requests()``, which it runs by default."""
        for value in self.start_requests() or ():
            yield value

    def start_requests(self) -> Iterable[Request]:
        """The first requests; by default one per ``start_urls`` entry, parsed by ``parse``.
        Used when the spider does not define ``start()``."""
        for url in self.start_urls:
            yield Request(url)

    def parse(self, response: Response) -> Any:
        raise NotImplementedError(
            f"spider {self.name!r} has no parse() method; define it or give each Request a callback"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _import_file(path: Path) -> ModuleType:
    module_name = f"spiderfarm_spiders.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpiderLoadError(f"cannot import spider file {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise SpiderLoadError(
            f"spider file {path}, line {exc.lineno}: {exc.msg}; fix the syntax error"
        ) from None
    except Exception as exc:
        del sys.modules[module_name]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise SpiderLoadError(
            f"spider file {path} failed to import: {type(exc).__name__}: {exc} "
            f"(at {where.filename}, line {where.lineno})"
        ) from None
    return module


def _spiders_in(module: ModuleType) -> list[type[Spider]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Spider)
        and obj is not Spider
        and obj.__module__ == module.__name__
    ]


def load_spider(ref: str, spiders_dir: Path | str = "spiders") -> type[Spider]:
    """The spider class named ``ref`` in ``spiders_dir``, or defined in file ``ref``.

    Raises:
        SpiderLoadError: no such spider, a file that does not import, or an ambiguous file.
    """
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref)
        if not path.is_file():
            raise SpiderLoadError(f"spider file {ref!r} does not exist")
        defined = _spiders_in(_import_file(path))
        if not defined:
            raise SpiderLoadError(f"spider file {ref!r} defines no subclass of spiderfarm.Spider")
        # Unnamed classes are bases for others (Scrapy's rule), unless there is nothing else.
        found = [s for s in defined if s.name] or defined
        if len(found) > 1:
            names = ", ".join(sorted(s.name for s in found))
            raise SpiderLoadError(
                f"spider file {ref!r} defines several spiders ({names}); "
                "run one by name with --spiders-dir"
            )
        _check_spider(found[0], path)
        return found[0]

    directory = Path(spiders_dir)
    if not directory.is_dir():
        raise SpiderLoadError(
            f"no spider named {ref!r}: spiders directory {str(directory)!r} does not exist "
            "(run from your project folder, pass --spiders-dir, or give a path to a .py file)"
        )
    by_name: dict[str, tuple[type[Spider], Path]] = {}
    broken: list[str] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = _import_file(path)
        except SpiderLoadError as exc:
            broken.append(str(exc))
            continue
        for spider in _spiders_in(module):
            if spider.name == ref and ref in by_name:
                raise SpiderLoadError(
                    f"spider name {ref!r} is defined twice: in {by_name[ref][1]} and in {path}; "
                    "rename one"
                )
            by_name.setdefault(spider.name, (spider, path))
    if ref in by_name:
        spider, path = by_name[ref]
        _check_spider(spider, path)
        return spider
    known = ", ".join(sorted(n for n in by_name if n)) or "none"
    message = f"no spider named {ref!r} in {str(directory)!r} (spiders found: {known})"
    if broken:
        message += "; these spider files failed to import: " + "; ".join(broken)
    raise SpiderLoadError(message)


def _check_spider(spider: type[Spider], path: Path) -> None:
    if not spider.name:
        raise SpiderLoadError(f"spider {spider.__name__} in {path} has no name attribute")
    if isinstance(spider.start_urls, str):
        raise SpiderLoadError(
            f"spider {spider.name!r}: start_urls must be a list of URLs, not a string"
        )
