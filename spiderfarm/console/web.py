"""The console's HTTP side: an aiohttp app on its own event loop, in a daemon thread.

Every GET reads the monitor's latest view (never the frontier); the actions (pause,
resume, stop, submit) call the frontier in a thread, briefly, once a request has
arrived whole. Off loopback, every request but the page and its assets must carry the
token (``Authorization: Bearer TOKEN`` or ``X-Spiderfarm-Token``); every POST must carry
``X-Spiderfarm-Token`` (the token, or anything on loopback), a header no other site's
page can make a browser send, so no other site can act here (CSRF). On loopback, a Host
header naming another machine is refused (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..security import is_loopback
from .controls import Controls
from .metrics import metrics_text
from .snapshots import HOST_SORTS, Monitor, View

logger = logging.getLogger("spiderfarm.console")

__all__ = ["ConsoleApp", "Controls"]

_ASSETS = {
    "/": ("index.html", "text/html"),
    "/console.js": ("console.js", "text/javascript"),
    "/console.css": ("console.css", "text/css"),
}
_MAX_PER_PAGE = 500
_MAX_SUBMIT_BYTES = 4 * 2**20
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
#: Requests answered per second, all clients together (a page makes about 1.5): past it
#: requests wait their turn, asleep. A flood then costs the server process a bounded
#: share of its CPU (and of the GIL the frontier's threads need), however many clients.
MAX_REQUESTS_PER_S = 100.0
_BURST = 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _asset(name: str) -> bytes:
    return importlib.resources.files("spiderfarm.console").joinpath("static", name).read_bytes()


class ConsoleApp:
    """The routes, the token rule, and the loop thread that serves them."""

    def __init__(
        self, monitor: Monitor, controls: Controls, bind: tuple[str, int], token: str | None
    ) -> None:
        self.monitor, self.controls = monitor, controls
        self.bind = bind
        self._token = token
        self._loopback = is_loopback(bind[0])
        self._assets = {path: (_asset(name), kind) for path, (name, kind) in _ASSETS.items()}
        self._metrics: tuple[View | None, bytes] = (None, b"")
        self._next_slot = 0.0  # when the next request beyond the burst may be answered
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] = bind

    # -- the rules -------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("X-Spiderfarm-Token", "")
        auth = request.headers.get("Authorization", "")
        if not given and auth.startswith("Bearer "):
            given = auth[7:]
        return hmac.compare_digest(given.strip().encode(), self._token.encode())

    async def _pace(self) -> None:
        """Wait for this request's turn (``MAX_REQUESTS_PER_S``): a leaky bucket."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        gap = 1.0 / MAX_REQUESTS_PER_S
        slot = max(self._next_slot, now - _BURST * gap)
        self._next_slot = slot + gap
        if slot > now:
            await asyncio.sleep(slot - now)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self._pace()
        if self._loopback and self._token is None:
            host = request.host.rpartition(":")[0] if request.host.count(":") == 1 else request.host
            if host.lower() not in _LOOPBACK_NAMES and not host.startswith("[::1]"):
                return web.Response(status=403, text="the console answers to 127.0.0.1 only\n")
        if request.path not in self._assets and not self._authorized(request):
            return web.Response(
                status=401,
                text="a console token is needed: give it as 'Authorization: Bearer TOKEN' "
                "(python -m spiderfarm console-token --authkey-file KEY prints it)\n",
                headers={"WWW-Authenticate": 'Bearer realm="spiderfarm console"'},
            )
        if request.method == "POST" and "X-Spiderfarm-Token" not in request.headers:
            return web.Response(status=403, text="POST needs an X-Spiderfarm-Token header\n")
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        )
        return response

    # -- reading ---------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        body, kind = self._assets[request.path]
        info = {"token_required": self._token is not None}
        if request.path == "/":
            body = body.replace(b"{{CONFIG}}", json.dumps(info).encode())
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def _state(self, request: web.Request) -> web.Response:
        return web.Response(body=self.monitor.latest.state_json, content_type="application/json")

    async def _hosts(self, request: web.Request) -> web.Response:
        q = request.query
        sort = q.get("sort", "in_flight")
        if sort not in HOST_SORTS:
            raise web.HTTPBadRequest(text=f"sort must be one of {', '.join(HOST_SORTS)}\n")
        try:
            page = max(int(q.get("page", "0")), 0)
            per_page = min(max(int(q.get("per_page", "50")), 1), _MAX_PER_PAGE)
        except ValueError:
            raise web.HTTPBadRequest(text="page and per_page must be integers\n") from None
        view = self.monitor.latest
        descending = q.get("order", "desc") != "asc"
        if len(view.hosts) > 5000:  # sorting 100,000 hosts takes a while: not on the loop
            result = await asyncio.to_thread(view.host_page, sort, descending, page, per_page)
        else:
            result = view.host_page(sort, descending, page, per_page)
        return web.json_response(result)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        view = self.monitor.latest
        cached_view, text = self._metrics
        if cached_view is not view:
            text = await asyncio.to_thread(metrics_text, lambda: view)
            self._metrics = (view, text)
        return web.Response(body=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Format": "prometheus 0.0.4"})  # fmt: skip

    # -- acting ----------------------------------------------------------------------
    async def _form(self, request: web.Request) -> dict[str, Any]:
        if request.content_length and request.content_length > _MAX_SUBMIT_BYTES:
            raise web.HTTPRequestEntityTooLarge(_MAX_SUBMIT_BYTES, request.content_length)
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be a JSON object\n") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object\n")
        return data

    async def _host_arg(self, request: web.Request) -> str | None:
        host = (await self._form(request)).get("host")
        if host is not None and (not isinstance(host, str) or not 0 < len(host) <= 255):
            raise web.HTTPBadRequest(text="'host' must be a host key such as example.com:443\n")
        return host

    async def _pause(self, request: web.Request) -> web.Response:
        host = await self._host_arg(request)
        await asyncio.to_thread(self.controls.pause, host)
        logger.warning("console: leasing paused%s", f" for host {host}" if host else "")
        return web.json_response({"paused": host or "farm"})

    async def _resume(self, request: web.Request) -> web.Response:
        host = await self._host_arg(request)
        await asyncio.to_thread(self.controls.resume, host)
        logger.warning("console: leasing resumed%s", f" for host {host}" if host else "")
        return web.json_response({"resumed": host or "farm"})

    async def _stop(self, request: web.Request) -> web.Response:
        self.controls.stop()
        logger.warning("console: stop requested; finishing in-flight requests")
        return web.json_response({"stopping": True})

    async def _submit(self, request: web.Request) -> web.Response:
        submit = self.controls.submit
        if submit is None:
            raise web.HTTPConflict(text="this farm was not started with --serve\n")
        tasks = (await self._form(request)).get("tasks")
        if not isinstance(tasks, list):
            raise web.HTTPBadRequest(text="'tasks' must be a list of URLs or request dicts\n")
        try:
            result = await asyncio.to_thread(submit, tasks)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        return web.json_response(result)

    # -- serving ---------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=_MAX_SUBMIT_BYTES)
        for path in self._assets:
            app.router.add_get(path, self._page)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/hosts", self._hosts)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_post("/api/pause", self._pause)
        app.router.add_post("/api/resume", self._resume)
        app.router.add_post("/api/stop", self._stop)
        app.router.add_post("/api/submit", self._submit)
        return app

    def start(self) -> tuple[str, int]:
        """Listen (in the loop thread); returns the bound address.

        Raises:
            OSError: the address cannot be bound.
        """
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="console-http", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.address

    async def _listen(self) -> None:
        runner = self._runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.bind[0], self.bind[1], shutdown_timeout=0.5)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.address = (str(host), int(port))

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(5)
