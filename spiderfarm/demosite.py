"""Generate and serve a deterministic product-catalogue website for demos, tests and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

__all__ = ["Catalogue", "main", "make_app", "serve"]

# Tree fan-out: keeps every page within ~log10(pages) clicks of "/".
_BRANCHING = 10

_ADJECTIVES = (
    "Amber", "Brass", "Cedar", "Copper", "Crimson", "Dusky", "Electric", "Fuzzy",
    "Gilded", "Granite", "Hollow", "Indigo", "Jade", "Lunar", "Marble", "Misty",
    "Nimble", "Olive", "Polar", "Quiet", "Rustic", "Silver", "Solar", "Tidal",
    "Umber", "Velvet", "Wooden", "Woven", "Zesty", "Arctic", "Bold", "Coral",
)  # fmt: skip
_NOUNS = (
    "Anchor", "Basket", "Beacon", "Blanket", "Bottle", "Candle", "Compass", "Drum",
    "Easel", "Fiddle", "Globe", "Hammock", "Helmet", "Kettle", "Ladder", "Lantern",
    "Mirror", "Mug", "Notebook", "Oar", "Pillow", "Quill", "Radio", "Satchel",
    "Scarf", "Teapot", "Telescope", "Trowel", "Umbrella", "Vase", "Whistle", "Yoyo",
)  # fmt: skip
_LOREM = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua",
    "enim", "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris",
    "nisi", "aliquip", "ex", "ea", "commodo", "consequat", "duis", "aute", "irure", "in",
    "reprehenderit", "voluptate", "velit", "esse", "cillum", "fugiat", "nulla", "pariatur",
    "excepteur", "sint", "occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui",
    "officia", "deserunt", "mollit", "anim", "id", "est", "laborum",
)  # fmt: skip

_HEAD = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    "<title>{title} | Spiderfarm Demo Catalogue</title>\n</head>\n<body>\n"
    '<ul class="breadcrumb"><li><a href="/">Home</a></li><li>Product {i}</li></ul>\n'
    '<div class="product">\n<h1 class="title">{title}</h1>\n'
    '<span class="price">{price}</span>\n<span class="sku">{sku}</span>\n'
    '<p class="description">'
)
_MIDDLE = '</p>\n</div>\n<h2>Related products</h2>\n<ul class="related-products">\n'
_LINK = '<li><a class="related" href="{href}">Product {j}</a></li>\n'
_TAIL = "</ul>\n</body>\n</html>\n"
# Descriptions never shrink below this, so even tiny pages have some text.
_MIN_DESCRIPTION = 40


class _Site:
    """Per-catalogue derived data: lorem text, path index, link markup, rendered pages."""

    __slots__ = ("index", "links", "lorem", "pages", "starts")

    def __init__(self, cat: Catalogue) -> None:
        rng = random.Random(f"lorem-{cat.seed}")
        sentences: list[str] = []
        size = 0
        # Slicing one long text is far cheaper than drawing ~2,000 words per page.
        while size < cat.page_bytes + 65_536:
            words = rng.choices(_LOREM, k=rng.randint(6, 14))
            sentence = " ".join(words).capitalize() + "."
            sentences.append(sentence)
            size += len(sentence) + 1
        self.lorem = " ".join(sentences)
        limit = len(self.lorem) - max(cat.page_bytes, _MIN_DESCRIPTION) - 1
        self.starts = [0] + [k + 1 for k in range(limit) if self.lorem[k] == " "]
        paths = cat.paths()
        self.index = {path: i for i, path in enumerate(paths)}
        self.links = [_LINK.format(href=path, j=j) for j, path in enumerate(paths)]
        self.pages: list[bytes | None] = [None] * cat.pages


@functools.lru_cache(maxsize=4)
def _site(cat: Catalogue) -> _Site:
    return _Site(cat)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """A synthetic shop: page i is a product with a title, price, SKU and related links."""

    pages: int = 2000
    links_per_page: int = 20
    page_bytes: int = 12_000
    seed: int = 1

    def __post_init__(self) -> None:
        for name, minimum in (("pages", 1), ("links_per_page", 1), ("page_bytes", 0)):
            value = getattr(self, name)
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value!r}")

    def path(self, i: int) -> str:
        self._check(i)
        return "/" if i == 0 else f"/product/{i}.html"

    def paths(self) -> list[str]:
        return ["/"] + [f"/product/{i}.html" for i in range(1, self.pages)]

    def item(self, i: int) -> dict[str, str]:
        """What a spider extracting title, price and sku from page i must produce."""
        _, title, price = self._product(i)
        return {"path": self.path(i), "title": title, "price": price, "sku": f"SKU-{i:06d}"}

    def links(self, i: int) -> list[int]:
        """Indices of the pages that page i links to as related products, in page order."""
        return self._links(i, self._product(i)[0])

    def render(self, i: int) -> bytes:
        site = _site(self)
        self._check(i)
        page = site.pages[i]
        if page is None:
            page = site.pages[i] = self._render(i, site)
        return page

    def write_static(self, directory: Path) -> None:
        """Write the site as files (index.html, product/{i}.html) for any static file server."""
        directory = Path(directory)
        (directory / "product").mkdir(parents=True, exist_ok=True)
        for i in range(self.pages):
            name = "index.html" if i == 0 else f"product/{i}.html"
            (directory / name).write_bytes(self.render(i))

    def _check(self, i: int) -> None:
        if not 0 <= i < self.pages:
            raise IndexError(f"page {i} out of range for a catalogue of {self.pages} pages")

    def _product(self, i: int) -> tuple[random.Random, str, str]:
        self._check(i)
        rng = random.Random(self.seed * 1_000_003 + i)
        # random() scaling instead of choice()/randint(): several times cheaper per draw.
        draw = rng.random
        adjective = _ADJECTIVES[int(draw() * len(_ADJECTIVES))]
        noun = _NOUNS[int(draw() * len(_NOUNS))]
        pence = 99 + int(draw() * 99_900)
        return rng, f"Product {i}: {adjective} {noun}", f"£{pence // 100}.{pence % 100:02d}"

    def _links(self, i: int, rng: random.Random) -> list[int]:
        # Capping fan-out at links_per_page keeps every page at exactly links_per_page links.
        fanout = min(_BRANCHING, self.links_per_page)
        links = list(range(fanout * i + 1, min(fanout * i + fanout + 1, self.pages)))
        missing = self.links_per_page - len(links)
        if self.pages == 1:
            return links + [0] * missing
        # Draw from pages-1 slots and shift past i so a page never links to itself.
        drawn = rng.choices(range(self.pages - 1), k=missing)
        return links + [j + 1 if j >= i else j for j in drawn]

    def _render(self, i: int, site: _Site) -> bytes:
        rng, title, price = self._product(i)
        head = _HEAD.format(title=title, i=i, price=price, sku=f"SKU-{i:06d}").encode()
        links = site.links
        related = "".join([links[j] for j in self._links(i, rng)])
        fixed = len(head) + len(_MIDDLE) + len(related) + len(_TAIL)
        budget = max(self.page_bytes - fixed, _MIN_DESCRIPTION)
        start = site.starts[int(rng.random() * len(site.starts))]
        end = site.lorem.rfind(" ", start, start + budget + 1)
        description = site.lorem[start : end if end > start else start + budget]
        # Only the head holds non-ASCII ("£"); encoding the big pure-ASCII rest
        # separately takes the fast path and keeps a 20,000-page render well under 2 s.
        tail = "".join((description, _MIDDLE, related, _TAIL)).encode("ascii")
        return head + tail


def make_app(catalogue: Catalogue) -> web.Application:
    """An aiohttp app serving every catalogue page; anything else (robots.txt too) is 404."""
    index = _site(catalogue).index
    render = catalogue.render

    async def page(request: web.Request) -> web.Response:
        i = index.get(request.path)
        if i is None:
            raise web.HTTPNotFound()
        return web.Response(body=render(i), content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


async def serve(
    catalogue: Catalogue, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (call ``cleanup()`` to stop) and the bound port."""
    # No access log: benchmarks must not pay for per-request logging.
    runner = web.AppRunner(make_app(catalogue), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


async def _serve_forever(catalogue: Catalogue, host: str, port: int) -> None:
    runner, bound = await serve(catalogue, host, port)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        shown = f"[{host}]" if ":" in host else host
        print(f"serving http://{shown}:{bound}/ ({catalogue.pages} pages)", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Catalogue()
    parser = argparse.ArgumentParser(
        prog="python -m spiderfarm.demosite",
        description="Serve (or write out) the deterministic demo product catalogue.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pages", type=int, default=defaults.pages)
    parser.add_argument("--links-per-page", type=int, default=defaults.links_per_page)
    parser.add_argument("--page-bytes", type=int, default=defaults.page_bytes)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--write", type=Path, metavar="DIR", help="write static files and exit")
    args = parser.parse_args(argv)
    try:
        catalogue = Catalogue(args.pages, args.links_per_page, args.page_bytes, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    if args.write is not None:
        catalogue.write_static(args.write)
        print(f"wrote {catalogue.pages} pages to {args.write}", flush=True)
        return 0
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_forever(catalogue, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
