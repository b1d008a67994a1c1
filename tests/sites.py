"""Local test sites that every spiderfarm test crawls, so no test touches the internet.

``make_test_app()`` builds an aiohttp application with one route per fetch or crawl edge
case (link graphs, delays, status codes, redirects, charsets, flaky endpoints, bombs).
``SiteServer`` runs any application in-process on ``127.0.0.1:0``; ``run_subprocess_site``
starts a server in a child process and reads its port from the first line it prints.

Run standalone with ``python -m tests.sites --port 0``; it prints
``serving http://127.0.0.1:PORT/`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import html
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeAlias

import aiohttp
from aiohttp import web

__all__ = [
    "COUNTERS",
    "ENCODED_TEXT",
    "HITS",
    "PNG_BYTES",
    "PROXIED",
    "REPO_ROOT",
    "ROBOTS",
    "SPANS",
    "XHTML_DOCS",
    "Hit",
    "SiteServer",
    "SiteStartError",
    "ThreadedSites",
    "captured_output",
    "make_proxy_app",
    "make_test_app",
    "run_subprocess_site",
    "stop_subprocess",
    "subprocess_environ",
    "xhtml_page",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

Hit: TypeAlias = tuple[str, float, dict[str, str]]
"""One request as the site saw it: ``(path_qs, time.monotonic() on arrival, headers)``."""

HITS = web.AppKey("hits", list[Hit])
"""Every request the app received, in arrival order (unknown paths included)."""

COUNTERS = web.AppKey("counters", collections.Counter[str])
"""Requests seen per flaky endpoint, keyed ``"flaky/{key}"`` and ``"retry-after/{key}"``."""

ROBOTS = web.AppKey("robots", tuple[int, str])
"""Optional ``(status, body)`` that ``/robots.txt`` answers with; unset, it is a 404.
Set it on a fresh app before serving it: ``app[ROBOTS] = (200, "User-agent: *\\n...")``."""

SPANS = web.AppKey("spans", list[tuple[str, float, float]])
"""``(path_qs, start, end)`` of every ``/timed/...`` request: ``time.monotonic()`` when
its handler began and when it finished, so a test can tell whether two overlapped."""

PROXIED = web.AppKey("proxied", list[str])
"""Every absolute URI the ``make_proxy_app()`` proxy was asked for, in arrival order."""

ENCODED_TEXT = "café"
"""The text that every ``/encoding/*`` page carries in ``<p id="text">``."""

CHUNK_BYTES = 64 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- the application ------------------------------------------------------------------


def _page(title: str, body: str = "") -> str:
    esc = html.escape(title)
    return (
        f"<!DOCTYPE html>\n<html><head><title>{esc}</title></head>"
        f"<body><h1>{esc}</h1>{body}</body></html>\n"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query {name}={raw!r} is not an integer") from None


@web.middleware
async def _record_hit(request: web.Request, handler: _Handler) -> web.StreamResponse:
    # A middleware records before any handler runs, so 404s are counted too.
    request.app[HITS].append((request.path_qs, time.monotonic(), dict(request.headers)))
    return await handler(request)


async def _links(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    limit = _int_query(request, "max", 10)
    targets = [m for m in (n + 1, n + 2) if m <= limit]
    items = "".join(f'<li><a href="/links/{m}?max={limit}">link {m}</a></li>' for m in targets)
    return _html(_page(f"Links {n}", f"<ul>{items}</ul>"))


async def _named_page(request: web.Request) -> web.Response:
    return _html(_page(request.match_info["name"]))


async def _delay(request: web.Request) -> web.Response:
    raw = request.match_info["seconds"]
    try:
        seconds = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"delay {raw!r} is not a number") from None
    await asyncio.sleep(seconds)
    return _html(_page(f"Delay {raw}"))


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if not 200 <= code <= 599:
        raise web.HTTPBadRequest(text=f"status {code} is outside 200..599")
    if code in (204, 304):  # these must not carry a body
        return web.Response(status=code)
    return _html(_page(f"Status {code}"), status=code)


async def _redirect(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    if n < 1:
        raise web.HTTPBadRequest(text="a redirect chain needs at least one hop")
    raise web.HTTPFound("/page/final" if n == 1 else f"/redirect/{n - 1}")


async def _redirect_loop(request: web.Request) -> web.Response:
    raise web.HTTPFound("/redirect-loop")


async def _redirect_to(request: web.Request) -> web.Response:
    url = request.query.get("url")
    if not url:
        raise web.HTTPBadRequest(text="/redirect-to needs ?url=")
    raise web.HTTPFound(url)


def _encoding_body(head: str = "") -> str:
    return (
        f"<!DOCTYPE html>\n<html><head>{head}<title>Encoding</title></head>"
        f'<body><p id="text">{ENCODED_TEXT}</p></body></html>\n'
    )


# path suffix -> (body bytes, exact Content-Type header)
_ENCODINGS: dict[str, tuple[bytes, str]] = {
    "header-latin1": (
        _encoding_body().encode("latin-1"),
        "text/html; charset=iso-8859-1",
    ),
    "meta-only": (
        _encoding_body('<meta charset="windows-1252">').encode("cp1252"),
        "text/html",
    ),
    "mislabelled": (_encoding_body().encode("cp1252"), "text/html; charset=utf-8"),
    "bogus": (_encoding_body().encode("utf-8"), "text/html; charset=x-no-such-charset"),
    "utf8-none": (_encoding_body().encode("utf-8"), "text/html"),
}


async def _encoding(request: web.Request) -> web.Response:
    body, content_type = _ENCODINGS[request.match_info["kind"]]
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _flaky(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    fail = _int_query(request, "fail", 1)
    code = _int_query(request, "code", 503)
    counters = request.app[COUNTERS]
    counters[f"flaky/{key}"] += 1
    if counters[f"flaky/{key}"] <= fail:
        return _html(_page(f"failing {key}"), status=code)
    return _html(_page(f"ok {key}"))


async def _retry_after(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    seconds = request.query.get("seconds", "1")
    fail = _int_query(request, "fail", 1)
    counters = request.app[COUNTERS]
    counters[f"retry-after/{key}"] += 1
    if counters[f"retry-after/{key}"] <= fail:
        return web.Response(
            text=_page(f"slow down {key}"),
            status=429,
            content_type="text/html",
            headers={"Retry-After": seconds},
        )
    return _html(_page(f"ok {key}"))


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "items": [1, 2, 3]})


async def _big(request: web.Request) -> web.StreamResponse:
    total = _int_query(request, "bytes", 1024 * 1024)
    if total < 0:
        raise web.HTTPBadRequest(text="bytes must be >= 0")
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.content_length = total
    await response.prepare(request)
    head = b"<!DOCTYPE html>\n<html><body><pre>\n"[:total]
    await response.write(head)
    filler = (b"spiderfarm big body " * (CHUNK_BYTES // 20 + 1))[:CHUNK_BYTES]
    left = total - len(head)
    while left > 0:
        chunk = filler[:left]
        await response.write(chunk)
        left -= len(chunk)
    await response.write_eof()
    return response


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = (b"<p>endless</p>\n" * (CHUNK_BYTES // 15 + 1))[:CHUNK_BYTES]
    try:
        while True:
            await response.write(chunk)
            await asyncio.sleep(0)  # a fast reader must not starve the loop
    except ConnectionError:  # the client went away, which is the only way this ends
        pass
    return response


async def _echo_headers(request: web.Request) -> web.Response:
    return web.json_response(dict(request.headers))


async def _set_cookie(request: web.Request) -> web.Response:
    response = _html(_page("cookie set"))
    response.set_cookie("session", "abc")
    return response


async def _check_cookie(request: web.Request) -> web.Response:
    value = request.cookies.get("session", "none")
    return _html(_page("cookie", f'<p id="cookie">{html.escape(value)}</p>'))


async def _robots(request: web.Request) -> web.Response:
    configured = request.app.get(ROBOTS)
    if configured is None:
        return _html(_page("no robots.txt here"), status=404)
    status, body = configured
    return web.Response(text=body, status=status, content_type="text/plain")


async def _timed(request: web.Request) -> web.Response:
    started = time.monotonic()
    try:
        raw = request.query.get("delay", "0")
        try:
            seconds = float(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"delay {raw!r} is not a number") from None
        if seconds > 0:
            await asyncio.sleep(seconds)
        return _html(_page(request.match_info["name"]))
    finally:  # recorded even if the client went away mid-sleep
        request.app[SPANS].append((request.path_qs, started, time.monotonic()))


async def _tree(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    depth = _int_query(request, "depth", 2)
    children = [node + c for c in "01"] if len(node) - 1 < depth else []
    items = "".join(f'<li><a href="/tree/{c}?depth={depth}">{c}</a></li>' for c in children)
    return _html(_page(node, f"<ul>{items}</ul>"))


# DocBook-style XHTML: an XML declaration, an XHTML doctype and namespace, served as
# text/html (as many documentation sets are). Parsed as XML, not one <title> or <a> of
# it is found. ch3 sits one directory down and resolves its links with <base href>.
_XHTML_PROLOG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" lang="en" xml:lang="en">'
)
XHTML_DOCS: dict[str, tuple[str, str, str]] = {
    "index.html": (
        "Debian Reference",
        "",
        '<a href="ch1.html">1</a> <a href="/xhtml/ch2.html">2</a> '
        '<a href="sub/ch3.html">3</a> <a href="figure.png">figure</a> '
        '<a href="mailto:doc@example.org">mail</a> <a name="top" id="top"></a>',
    ),
    "ch1.html": (
        "Chapter 1. GNU/Linux tutorials",
        "",
        '<a href="index.html">up</a> <a href="./ch2.html">next</a>',
    ),
    "ch2.html": (
        "Chapter 2. Debian package management",
        "",
        '<a href="index.html">up</a> <a href="sub/ch3.html">next</a>',
    ),
    "sub/ch3.html": (
        "Chapter 3. The system initialization",
        '<base href="/xhtml/" />',
        '<a href="ch1.html">back to 1</a> <a href="index.html">up</a>',
    ),
}
"""``/xhtml/{path}`` pages: ``path -> (title, extra <head> markup, <body> links)``."""

PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
"""The body of ``/xhtml/figure.png`` (``image/png``): binary from its first bytes."""


def xhtml_page(title: str, head: str = "", body: str = "") -> bytes:
    """A DocBook-style XHTML page: XML declaration, XHTML doctype, xmlns, UTF-8."""
    esc = html.escape(title)
    return (
        f'{_XHTML_PROLOG}<head><meta http-equiv="Content-Type" content="text/html; '
        f'charset=UTF-8" /><title>{esc}</title>{head}</head>'
        f'<body><div class="chapter"><h1>{esc}</h1><p>{body}</p></div></body></html>\n'
    ).encode()


async def _xhtml(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    if path == "figure.png":
        return web.Response(body=PNG_BYTES, content_type="image/png")
    if path not in XHTML_DOCS:
        raise web.HTTPNotFound()
    return web.Response(
        body=xhtml_page(*XHTML_DOCS[path]), content_type="text/html", charset="utf-8"
    )


def make_test_app() -> web.Application:
    """Build a fresh test site with empty ``app[HITS]`` and ``app[COUNTERS]``.

    Routes (every request is recorded in ``app[HITS]`` before it is handled):

    - ``/links/{n}?max=M``: page ``Links {n}`` linking to ``/links/{n+1}?max=M`` and
      ``/links/{n+2}?max=M`` while the target is ``<= M`` (default 10); starting at
      ``/links/0`` a crawl finds exactly ``M + 1`` pages.
    - ``/page/{name}``: ``<title>{name}</title><h1>{name}</h1>``.
    - ``/delay/{seconds}``: sleeps (float seconds), then an HTML page.
    - ``/status/{code}``: that status (200..599) with a small HTML body (none for 204/304).
    - ``/redirect/{n}``: 302 chain of n >= 1 hops ending at ``/page/final``;
      ``/redirect-loop``: 302 to itself; ``/redirect-to?url=X``: 302 to X, any scheme.
    - ``/encoding/{header-latin1,meta-only,mislabelled,bogus,utf8-none}``: ``ENCODED_TEXT``
      in ``<p id="text">`` with the charset tricks their names say.
    - ``/flaky/{key}?fail=N&code=C``: the first N (default 1) requests per key answer C
      (default 503), then 200 with ``<h1>ok {key}</h1>``.
    - ``/retry-after/{key}?seconds=S&fail=N``: first N answer 429 with ``Retry-After: S``.
    - ``/json``: ``{"ok": true, "items": [1, 2, 3]}``.
    - ``/big?bytes=N``: exactly N bytes (Content-Length set), streamed in 64 KiB chunks.
    - ``/endless``: chunked body of 64 KiB chunks until the client goes away.
    - ``/echo-headers``: the request headers as a JSON object.
    - ``/set-cookie``: sets ``session=abc``; ``/check-cookie``: ``<p id="cookie">`` holds
      the ``session`` cookie or ``none``.
    - ``/robots.txt``: 404, or ``app[ROBOTS]`` (status, body) when set.
    - ``/timed/{name}?delay=S``: sleeps S seconds (default 0), then a page titled
      ``{name}``; the handler's start and end are recorded in ``app[SPANS]``.
    - ``/tree/{node}?depth=D``: a binary tree of pages: node ``r`` at depth 0 links to
      ``r0`` and ``r1``, ``r0`` to ``r00`` and ``r01`` ..., down to depth D (default 2):
      ``2**(D+1) - 1`` pages in all.
    - ``/xhtml/index.html``: ``XHTML_DOCS``, four linked XHTML pages with an XML
      declaration served as ``text/html``, and ``/xhtml/figure.png`` (``PNG_BYTES``) that
      the index links to: a follow-all crawl finds exactly those five.
    """
    app = web.Application(middlewares=[_record_hit])
    app[HITS] = []
    app[COUNTERS] = collections.Counter()
    app[SPANS] = []
    app.router.add_get(r"/links/{n:\d+}", _links)
    app.router.add_get("/page/{name}", _named_page)
    app.router.add_get("/delay/{seconds}", _delay)
    app.router.add_get(r"/status/{code:\d+}", _status)
    app.router.add_get(r"/redirect/{n:\d+}", _redirect)
    app.router.add_get("/redirect-loop", _redirect_loop)
    app.router.add_get("/redirect-to", _redirect_to)
    kinds = "|".join(re.escape(kind) for kind in _ENCODINGS)
    app.router.add_get(f"/encoding/{{kind:(?:{kinds})}}", _encoding)
    app.router.add_get("/flaky/{key}", _flaky)
    app.router.add_get("/retry-after/{key}", _retry_after)
    app.router.add_get("/json", _json)
    app.router.add_get("/big", _big)
    app.router.add_get("/endless", _endless)
    app.router.add_get("/echo-headers", _echo_headers)
    app.router.add_get("/set-cookie", _set_cookie)
    app.router.add_get("/check-cookie", _check_cookie)
    app.router.add_get("/robots.txt", _robots)
    app.router.add_get("/timed/{name}", _timed)
    app.router.add_get("/tree/{node:r[01]*}", _tree)
    app.router.add_get("/xhtml/{path:.+}", _xhtml)
    return app


# -- a forward proxy ------------------------------------------------------------------

_HOP_HEADERS = frozenset(
    {"connection", "host", "keep-alive", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade"}
)  # fmt: skip
_SESSION = web.AppKey("proxy_session", aiohttp.ClientSession)


async def _proxy_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app[_SESSION] = session
        yield


async def _forward(request: web.Request) -> web.Response:
    target = request.raw_path
    if not target.startswith(("http://", "https://")):
        raise web.HTTPBadRequest(text=f"a proxy expects an absolute URI, got {target!r}")
    request.app[PROXIED].append(target)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    headers["Via"] = "1.1 spiderfarm-test-proxy"
    session = request.app[_SESSION]
    async with session.request(
        request.method, target, headers=headers, data=await request.read(),
        allow_redirects=False,
    ) as upstream:  # fmt: skip
        body = await upstream.read()
        keep = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        keep.pop("Content-Length", None)
        return web.Response(body=body, status=upstream.status, headers=keep)


def make_proxy_app() -> web.Application:
    """A plain-HTTP forward proxy: it takes absolute-URI requests (``GET http://host/path``),
    records each URI in ``app[PROXIED]``, adds ``Via: 1.1 spiderfarm-test-proxy`` and
    fetches it. Anything but an absolute URI is a 400."""
    app = web.Application()
    app[PROXIED] = []
    app.cleanup_ctx.append(_proxy_session)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


# -- running a site in-process --------------------------------------------------------


class SiteServer:
    """Serve ``app`` on ``host:port`` (port 0 picks a free one) for an ``async with`` block.

    Handlers are cancelled when their client disconnects and shutdown waits at most
    ``shutdown_timeout_s`` for stragglers, so a test that abandons ``/delay/60`` stays fast.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout_s: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SiteServer is not running; use it as `async with SiteServer(app)`")
        return self._port

    def url(self, path: str = "/") -> str:
        """Absolute URL for ``path`` (``"page/a"`` and ``"/page/a"`` are the same)."""
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout_s,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SiteServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ThreadedSites:
    """Serve ``apps`` on ``127.0.0.1:0`` from a background thread's own event loop.

    For a synchronous test (or a module-scoped fixture) that blocks on a crawl
    subprocess while in-process sites answer it and record what they saw::

        with ThreadedSites(make_test_app(), make_test_app()) as (a, b):
            run_cli(["crawl", ..., "-a", f"a={a.url()}"])
        hits = a.app[HITS]
    """

    def __init__(self, *apps: web.Application, timeout_s: float = 10.0) -> None:
        self.servers = [SiteServer(app) for app in apps]
        self._timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sites", daemon=True)

    def _call(self, coro: Coroutine[object, object, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout_s)

    def __enter__(self) -> list[SiteServer]:
        self._thread.start()
        try:
            for server in self.servers:
                self._call(server.start())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.servers

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for server in self.servers:
                self._call(server.close())
            self._call(self._loop.shutdown_asyncgens())
            self._call(self._loop.shutdown_default_executor())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout_s)
            self._loop.close()


# -- running a site in a subprocess ---------------------------------------------------

_URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/|\bport (\d+)\b")
_TAIL_LINES = 200


class SiteStartError(RuntimeError):
    """A subprocess site died or never printed its port."""


class _Output:
    """Drains a child's stdout and stderr on daemon threads, keeping the last lines.

    Draining matters: ``http.server`` logs every request to stderr, and a child whose
    pipe fills up blocks mid-request.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.stdout: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.stderr: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.stdout_lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        assert proc.stdout is not None and proc.stderr is not None
        self.threads = [
            threading.Thread(
                target=self._drain,
                args=(proc.stdout, self.stdout, self.stdout_lines),
                name=f"site-{proc.pid}-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=self._drain,
                args=(proc.stderr, self.stderr, None),
                name=f"site-{proc.pid}-stderr",
                daemon=True,
            ),
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _drain(
        stream: IO[str],
        tail: collections.deque[str],
        lines: queue.SimpleQueue[str] | None,
    ) -> None:
        try:
            for line in iter(stream.readline, ""):
                tail.append(line)
                if lines is not None:
                    lines.put(line)
        except (OSError, ValueError):  # the pipe was closed under us: nothing left to read
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


_OUTPUTS: weakref.WeakKeyDictionary[subprocess.Popen[str], _Output] = weakref.WeakKeyDictionary()


def subprocess_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) in which a child can import
    ``spiderfarm`` and ``tests.sites`` without installation, and prints unbuffered."""
    env = dict(os.environ if base is None else base)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def captured_output(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The last lines ``proc`` (from ``run_subprocess_site``) wrote: ``(stdout, stderr)``."""
    output = _OUTPUTS.get(proc)
    if output is None:
        return "", ""
    return "".join(output.stdout), "".join(output.stderr)


def stop_subprocess(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> int:
    """Terminate ``proc`` (kill it after ``timeout_s``), reap it, close its pipes.

    Returns the exit code: ``-signal.SIGTERM`` or ``0`` for a clean stop, depending on
    whether the child handles SIGTERM.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = _OUTPUTS.get(proc)
    if output is not None:
        # The drain threads close the pipes at EOF. Closing one here while its thread
        # still reads (a grandchild holding the pipe open) would block on the reader.
        output.join(timeout_s)
    else:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return proc.returncode


def run_subprocess_site(
    argv: list[str],
    timeout_s: float = 15,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start the server ``argv`` and wait until it prints its port.

    The server must print a line holding ``http://127.0.0.1:PORT/`` or ``port PORT`` to
    stdout. ``env`` defaults to ``subprocess_environ()`` and ``cwd`` to the repo root.
    Stop the process with ``stop_subprocess(proc)``.

    Returns ``(process, "http://127.0.0.1:PORT/")``.

    Raises:
        SiteStartError: the process exited or printed no port within ``timeout_s``;
            the message holds its stderr.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_environ() if env is None else dict(env),
        cwd=REPO_ROOT if cwd is None else cwd,
    )
    output = _Output(proc)
    _OUTPUTS[proc] = output
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = output.stdout_lines.get(timeout=0.05)
        except queue.Empty:
            line = None
        if line is not None:
            match = _URL_RE.search(line)
            if match:
                port = int(match.group(1) or match.group(2))
                return proc, f"http://127.0.0.1:{port}/"
            continue
        if proc.poll() is not None:
            problem = f"exited with code {proc.returncode} before printing its port"
            break
        if time.monotonic() >= deadline:
            problem = f"printed no port within {timeout_s} s"
            break
    stop_subprocess(proc)
    stdout, stderr = captured_output(proc)
    raise SiteStartError(
        f"test site {argv!r} {problem}; it needs to print 'http://127.0.0.1:PORT/' or "
        f"'port PORT' to stdout.\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
    )


# -- standalone -----------------------------------------------------------------------


async def _serve(make_server: Callable[[str, int], Any], host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with make_server(host, port) as server:
        print(f"serving {server.url()}", flush=True)
        await stop.wait()


def serve_standalone(
    prog: str, description: str, make_server: Callable[[str, int], Any], argv: list[str] | None
) -> int:
    """The ``python -m tests.<site> --port 0`` entry point shared by the test sites:
    ``make_server(host, port)`` is an async context manager with ``.url()``; it prints
    ``serving URL`` and serves until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(_serve(make_server, args.host, args.port))
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve_standalone(
        "python -m tests.sites",
        "Serve the spiderfarm test site.",
        lambda host, port: SiteServer(make_test_app(), host=host, port=port),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
