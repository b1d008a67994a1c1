"""The site the toolkit tests crawl (issue 13): sitemaps of every kind, forms that echo
what they receive, and a JSON API. Absolute URLs in it are built from the request's own
``Host``, so it works on any port.

- ``/robots.txt``: ``Sitemap:`` lines for ``/sitemap_index.xml`` (relative),
  ``/sitemap-entities.xml`` (absolute) and ``/sitemap-external.xml``.
- ``/sitemap_index.xml``: lists ``/sitemap-products.xml.gz`` (a gzip file, served as
  ``application/gzip``), ``/sitemap-blog.xml`` (served with ``Content-Encoding: gzip``),
  ``/sitemap-bomb.xml.gz`` (decompresses to ``BOMB_BYTES``), and
  ``/sitemap-archive.xml``, which the spider's ``sitemap_follow`` leaves alone.
- products ``/product/1`` .. ``/product/PRODUCTS``, each with an ``xhtml:link``
  alternate ``/de/product/N``; those after ``FRESH_PRODUCTS`` have a 2019 ``lastmod``.
- the blog sitemap: ``/blog/1`` .. ``/blog/BLOG_POSTS`` and ``/elsewhere/1`` (no rule).
- ``/sitemap-entities.xml``: an entity bomb, then ``/blog/after-the-laughs`` (never
  read: the parser stops at the bomb); ``/sitemap-external.xml``: an external entity
  naming ``/etc/passwd`` (never read), then ``/blog/after-the-entity``.
- ``/form`` (a login form: hidden token, select, checkboxes, two submit buttons),
  ``/search`` (a GET form), ``/echo`` (what was sent, as JSON), ``/api/items`` (POST a
  JSON ``{"page": N}``; pages of ``API_PAGE`` items until ``API_ITEMS``).
- ``/feed.rss`` (``FEED_ITEMS`` items with a ``dc:creator``), ``/products.csv``
  (``CSV_ROWS`` rows, ``;``-separated, no header, one ragged row).

Run standalone with ``python -m tests.toolkit_site --port 0``.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.sites import HITS, SiteServer, serve_standalone

__all__ = [
    "API_ITEMS",
    "API_PAGE",
    "BLOG_POSTS",
    "BOMB_BYTES",
    "CSV_ROWS",
    "FEED_ITEMS",
    "FRESH_PRODUCTS",
    "PRODUCTS",
    "make_toolkit_app",
]

PRODUCTS = 30
FRESH_PRODUCTS = 25  # products 26..30 were last modified in 2019
BLOG_POSTS = 5
BOMB_BYTES = 8 * 2**20  # the bomb sitemap's size once decompressed
API_ITEMS = 23
API_PAGE = 10

_URLSET = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
    'xmlns:xhtml="http://www.w3.org/1999/xhtml">\n{}</urlset>\n'
)


def _origin(request: web.Request) -> str:
    return f"http://{request.host}"


def _xml(text: str, **headers: str) -> web.Response:
    return web.Response(body=text.encode(), headers={"Content-Type": "application/xml", **headers})


async def _robots(request: web.Request) -> web.Response:
    text = (
        "User-agent: *\nDisallow: /private/\n"
        "Sitemap: /sitemap_index.xml\n"
        f"Sitemap: {_origin(request)}/sitemap-entities.xml\n"
        "Sitemap: /sitemap-external.xml\n"
    )
    return web.Response(text=text)


async def _index(request: web.Request) -> web.Response:
    origin = _origin(request)
    names = ["sitemap-products.xml.gz", "sitemap-blog.xml", "sitemap-bomb.xml.gz"]
    names.append("sitemap-archive.xml")
    entries = "".join(
        f"<sitemap><loc>{origin}/{name}</loc><lastmod>2024-01-01</lastmod></sitemap>\n"
        for name in names
    )
    return _xml(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{entries}'
        "</sitemapindex>\n"
    )


async def _products(request: web.Request) -> web.Response:
    origin = _origin(request)
    entries = []
    for n in range(1, PRODUCTS + 1):
        lastmod = "2024-05-01" if n <= FRESH_PRODUCTS else "2019-05-01"
        entries.append(
            f"<url><loc>{origin}/product/{n}</loc><lastmod>{lastmod}</lastmod>"
            f'<xhtml:link rel="alternate" hreflang="de" href="{origin}/de/product/{n}"/>'
            "</url>\n"
        )
    body = gzip.compress(_URLSET.format("".join(entries)).encode())
    return web.Response(body=body, headers={"Content-Type": "application/gzip"})


async def _blog(request: web.Request) -> web.Response:
    origin = _origin(request)
    entries = [f"<url><loc>{origin}/blog/{n}</loc></url>\n" for n in range(1, BLOG_POSTS + 1)]
    entries.append(f"<url><loc>{origin}/elsewhere/1</loc></url>\n")
    body = gzip.compress(_URLSET.format("".join(entries)).encode())
    return web.Response(
        body=body, headers={"Content-Type": "application/xml", "Content-Encoding": "gzip"}
    )


async def _bomb(request: web.Request) -> web.Response:
    origin = _origin(request)
    entry = f"<url><loc>{origin}/blog/from-the-bomb</loc></url>\n".encode()
    head = _URLSET.partition("{}")[0].encode() + entry
    padding = b" " * (BOMB_BYTES - len(head))
    body = gzip.compress(head + padding + b"</urlset>\n", compresslevel=9)
    return web.Response(body=body, headers={"Content-Type": "application/x-gzip"})


async def _archive(request: web.Request) -> web.Response:
    return _xml(_URLSET.format(f"<url><loc>{_origin(request)}/blog/archived</loc></url>\n"))


async def _entities(request: web.Request) -> web.Response:
    # Each entity is ten of the one before: resolved, &lol9; would be 3 GB of "lol".
    # libxml2 refuses the amplification even unresolved, so nothing of this sitemap,
    # not even the entry after the bomb, may be crawled.
    laughs = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<!DOCTYPE urlset [\n<!ENTITY lol0 "lol">\n{laughs}]>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        "<url><loc>&lol9;</loc></url>\n"
        f"<url><loc>{_origin(request)}/blog/after-the-laughs</loc></url>\n"
        "</urlset>\n"
    )
    return _xml(text)


async def _external(request: web.Request) -> web.Response:
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE urlset [\n<!ENTITY xxe SYSTEM "file:///etc/passwd">\n]>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        "<url><loc>&xxe;</loc></url>\n"
        f"<url><loc>{_origin(request)}/blog/after-the-entity</loc></url>\n"
        "</urlset>\n"
    )
    return _xml(text)


def _page(title: str) -> web.Response:
    return web.Response(
        text=f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>",
        content_type="text/html",
    )


async def _product(request: web.Request) -> web.Response:
    lang = "de " if request.path.startswith("/de/") else ""
    return _page(f"{lang}product {request.match_info['n']}")


async def _post(request: web.Request) -> web.Response:
    return _page(f"post {request.match_info['name']}")


async def _elsewhere(request: web.Request) -> web.Response:
    return _page("elsewhere")


_LOGIN_FORM = """<!DOCTYPE html><html><head><title>Log in</title></head><body>
<form id="search" action="/search" method="get"><input name="q" value="x"></form>
<form name="login" action="/echo?from=login" method="post">
  <input type="hidden" name="csrf" value="t0k&amp;en">
  <input type="text" name="user" value="">
  <input type="password" name="password">
  <select name="lang"><option value="en">English</option>
    <option value="fr" selected>Français</option></select>
  <input type="checkbox" name="remember" value="yes" checked>
  <input type="checkbox" name="newsletter" value="yes">
  <textarea name="note">hello
world</textarea>
  <input type="submit" name="action" value="Log in">
  <input type="submit" name="action" value="Register">
</form></body></html>"""

_SEARCH_FORM = """<html><body><form action="/echo" method="GET">
<input name="q" value="default"><input type="hidden" name="page" value="1">
<select name="sort" multiple><option value="price" selected>p</option>
<option value="date" selected>d</option><option value="name">n</option></select>
<button type="submit" name="go" value="search">Search</button>
</form></body></html>"""


async def _form(request: web.Request) -> web.Response:
    return web.Response(text=_LOGIN_FORM, content_type="text/html", charset="utf-8")


async def _search(request: web.Request) -> web.Response:
    return web.Response(text=_SEARCH_FORM, content_type="text/html", charset="utf-8")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    form: list[list[str]] = []
    if request.content_type == "application/x-www-form-urlencoded":
        form = [[k, v] for k, v in (await request.post()).items() if isinstance(v, str)]
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": [[k, v] for k, v in request.query.items()],
            "content_type": request.headers.get("Content-Type", ""),
            "form": form,
            "body": body.decode("utf-8", "replace"),
        }
    )


async def _api(request: web.Request) -> web.Response:
    if request.method != "POST" or request.content_type != "application/json":
        return web.json_response({"error": "POST application/json"}, status=415)
    if "application/json" not in request.headers.get("Accept", ""):
        return web.json_response({"error": "Accept application/json"}, status=406)
    try:
        page = int(json.loads(await request.read())["page"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'send {"page": N}'}, status=400)
    start = (page - 1) * API_PAGE
    items = [
        {"id": i, "name": f"item {i}"}
        for i in range(start + 1, min(start + API_PAGE, API_ITEMS) + 1)
    ]
    more = start + API_PAGE < API_ITEMS
    return web.json_response({"page": page, "items": items, "next": page + 1 if more else None})


FEED_ITEMS = 12
CSV_ROWS = 7  # and one ragged row, which is skipped


async def _rss(request: web.Request) -> web.Response:
    origin = _origin(request)
    items = "".join(
        f"<item><title>Item {n} &amp; more</title><link>{origin}/product/{n}</link>"
        f"<dc:creator>author {n % 3}</dc:creator></item>\n"
        for n in range(1, FEED_ITEMS + 1)
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>\n'
        f"<title>Shop</title>\n{items}</channel></rss>\n"
    )
    return web.Response(
        body=text.encode(), headers={"Content-Type": "application/rss+xml; charset=utf-8"}
    )


async def _csv(request: web.Request) -> web.Response:
    rows = [f'sku-{n};"Name; {n}";{n}.50' for n in range(1, CSV_ROWS + 1)]
    rows.insert(3, "ragged;row")
    return web.Response(text="\n".join(rows) + "\n", content_type="text/csv")


@web.middleware
async def _record(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[HITS].append((request.path_qs, 0.0, dict(request.headers)))
    return await handler(request)


def make_toolkit_app() -> web.Application:
    app = web.Application(middlewares=[_record])
    app[HITS] = []
    app.router.add_get("/robots.txt", _robots)
    app.router.add_get("/sitemap_index.xml", _index)
    app.router.add_get("/sitemap-products.xml.gz", _products)
    app.router.add_get("/sitemap-blog.xml", _blog)
    app.router.add_get("/sitemap-bomb.xml.gz", _bomb)
    app.router.add_get("/sitemap-archive.xml", _archive)
    app.router.add_get("/sitemap-entities.xml", _entities)
    app.router.add_get("/sitemap-external.xml", _external)
    app.router.add_get("/product/{n}", _product)
    app.router.add_get("/de/product/{n}", _product)
    app.router.add_get("/blog/{name}", _post)
    app.router.add_get("/elsewhere/{n}", _elsewhere)
    app.router.add_get("/form", _form)
    app.router.add_get("/search", _search)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/api/items", _api)
    app.router.add_get("/feed.rss", _rss)
    app.router.add_get("/products.csv", _csv)
    return app


def main(argv: list[str] | None = None) -> int:
    return serve_standalone(
        "python -m tests.toolkit_site",
        "Serve the toolkit test site.",
        lambda host, port: SiteServer(make_toolkit_app(), host=host, port=port),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
