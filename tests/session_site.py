"""A members-only site for session tests (issue 13): a CSRF-protected login form, and
``MEMBER_PAGES`` pages that answer 403 without the session cookie a login sets.

Routes (every request is recorded in ``app[HITS]`` with its headers):

- ``/login``: a form (``name="login"``) with a hidden ``csrf_token``, whose value is also
  set as the ``csrf`` cookie; ``POST /login`` with ``user``, ``password`` and the matching
  token sets the ``sid`` session cookie and answers 302 to ``/members/``; anything else 403.
- ``/members/``: links to ``/members/page/1`` ... ``/members/page/200`` (403 without a
  session); ``/members/page/{n}``: ``<p id="user">`` holds the session's user, ``<p
  id="n">`` the number (403 without a session); ``?delay=S`` sleeps S seconds first.
- ``/robots.txt``: 404.
"""

from __future__ import annotations

import asyncio
import html
import secrets

from aiohttp import web

from tests.sites import HITS, _record_hit

__all__ = ["LOGINS", "MEMBER_PAGES", "USERS", "make_session_app"]

MEMBER_PAGES = 200
USERS = {"ann": "s3cret-ann", "bob": "s3cret-bob"}
SESSIONS = web.AppKey("sessions", dict[str, str])
TOKENS = web.AppKey("tokens", set[str])
#: Each good login: (user, the X-Worker-Pid header it came with).
LOGINS = web.AppKey("logins", list[tuple[str, str]])


async def _login_form(request: web.Request) -> web.Response:
    token = secrets.token_hex(8)
    request.app[TOKENS].add(token)
    body = (
        "<html><body><form name='login' action='/login' method='post'>"
        f"<input type='hidden' name='csrf_token' value='{token}'>"
        "<input name='user'><input type='password' name='password'>"
        "<input type='submit' value='Log in'></form></body></html>"
    )
    response = web.Response(text=body, content_type="text/html")
    response.set_cookie("csrf", token, path="/login")
    return response


async def _login(request: web.Request) -> web.Response:
    form = await request.post()
    token = str(form.get("csrf_token", ""))
    user, password = str(form.get("user", "")), str(form.get("password", ""))
    if (
        not token
        or token not in request.app[TOKENS]
        or request.cookies.get("csrf") != token
        or USERS.get(user) != password
    ):
        return web.Response(status=403, text="bad login")
    sid = secrets.token_hex(16)
    request.app[SESSIONS][sid] = user
    request.app[LOGINS].append((user, request.headers.get("X-Worker-Pid", "")))
    response = web.HTTPFound("/members/")
    response.set_cookie("sid", sid, path="/", httponly=True)
    raise response


def _user(request: web.Request) -> str | None:
    return request.app[SESSIONS].get(request.cookies.get("sid", ""))


async def _members(request: web.Request) -> web.Response:
    user = _user(request)
    if user is None:
        return web.Response(status=403, text="members only")
    query = request.query_string
    suffix = f"?{html.escape(query)}" if query else ""
    links = "".join(
        f"<a href='/members/page/{n}{suffix}'>{n}</a>" for n in range(1, MEMBER_PAGES + 1)
    )
    return web.Response(
        text=f"<html><body><p id='user'>{user}</p>{links}</body></html>", content_type="text/html"
    )


async def _member_page(request: web.Request) -> web.Response:
    delay = float(request.query.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay)
    user = _user(request)
    if user is None:
        return web.Response(status=403, text="members only")
    n = request.match_info["n"]
    return web.Response(
        text=f"<html><body><p id='user'>{user}</p><p id='n'>{n}</p></body></html>",
        content_type="text/html",
    )


async def _robots(request: web.Request) -> web.Response:
    return web.Response(status=404)


def make_session_app() -> web.Application:
    app = web.Application(middlewares=[_record_hit])
    app[HITS] = []
    app[SESSIONS] = {}
    app[TOKENS] = set()
    app[LOGINS] = []
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_get("/members/", _members)
    app.router.add_get(r"/members/page/{n:\d+}", _member_page)
    app.router.add_get("/robots.txt", _robots)
    return app
