"""Fetching: the only module that imports aiohttp.

Every aiohttp or socket error becomes a ``FetchError(url, reason)`` here, with a short
stable reason code; nothing of aiohttp's leaks upward or across processes.

Cookies: aiohttp's session holds one routing jar that hands each request (and each of its
redirect hops) the aiohttp ``CookieJar`` of that request's session, from ``Sessions``:
the worker's copy of the crawl's jars, which the frontier keeps (see ``protocol``).

Bodies are decompressed here, not by aiohttp, so that ``max_body_bytes`` caps both the
bytes on the wire and the decompressed bytes while they stream: a decompression bomb
costs at most the cap plus one 64 KiB piece, whatever aiohttp version is installed.
"""

from __future__ import annotations

import contextvars
import email.utils
import errno
import importlib
import logging
import socket
import ssl
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from http.cookies import BaseCookie, Morsel, SimpleCookie
from types import MappingProxyType
from typing import Any, Final, Protocol

import aiohttp
import yarl
from aiohttp.abc import AbstractCookieJar, AbstractResolver, ResolveResult

from .errors import FetchError
from .http import Request, Response, response_for
from .protocol import (
    RETRYABLE_REASONS,
    CookieChange,
    CookieData,
    JarData,
    JarId,
    JarUpdates,
    jar_of,
)
from .settings import Settings
from .urls import safe_url

logger = logging.getLogger(__name__)

__all__ = ["RETRYABLE_REASONS", "Fetcher", "Sessions", "retry_after_s"]


_PIECE: Final = 64 * 1024  # most bytes one decompression step may produce
#: Empty gzip members cost CPU and produce nothing; real pages have one member.
MAX_GZIP_MEMBERS: Final = 1024
# Header limits, passed to aiohttp explicitly: they are the defence, not a default.
MAX_LINE_BYTES: Final = 8190
MAX_HEADERS: Final = 128
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


RETRY_AFTER_MAX_S = 86_400.0


def retry_after_s(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), at
    most a day (the frontier caps it lower still: a header must not park a host forever)."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone accepts '²', which float() refuses
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    wait = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, wait), RETRY_AFTER_MAX_S)


# -- DNS ------------------------------------------------------------------------------


def _bad_dns_name(host: str) -> str:
    """Why ``host`` can never resolve without asking a DNS server, or ``""``."""
    name = host.rstrip(".").lower()
    if name == "invalid" or name.endswith(".invalid"):
        return "the .invalid domain never resolves (RFC 6761)"
    if len(name) > 253:
        return f"host name is {len(name)} characters, over DNS's 253"
    if any(not 0 < len(label) <= 63 for label in name.split(".")):
        return "a host name label is empty or over 63 characters"
    return ""


class _GuardedResolver(AbstractResolver):
    """aiohttp's resolver, but names that cannot resolve fail at once, never reaching a
    DNS server: ``.invalid`` (RFC 6761 asks resolvers to answer it locally) and names
    DNS cannot encode."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        problem = _bad_dns_name(host)
        if problem:
            raise socket.gaierror(socket.EAI_NONAME, f"{host[:100]}: {problem}")
        return await self._inner.resolve(host, port, family)

    async def close(self) -> None:
        await self._inner.close()


# -- decompression --------------------------------------------------------------------


class _BadEncoding(Exception):
    """The body cannot be decoded with its Content-Encoding."""


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decode ``data``, yielding pieces of about ``_PIECE`` bytes at most."""

    def complete(self) -> bool:
        """True once the coded stream has ended, or if it never began (an empty body)."""


def _load_brotli() -> Any:
    try:
        module = importlib.import_module("brotli")  # the Brotli package
    except ImportError:
        return None
    # Only Brotli >= 1.2 can cap the output of one step; an older one would inflate a
    # bomb whole, so it is treated as absent.
    return module if hasattr(module.Decompressor, "can_accept_more_data") else None


_brotli = _load_brotli()
#: The codings we decode, and so advertise in ``Accept-Encoding``.
ACCEPT_ENCODING: Final = "gzip, deflate, br" if _brotli is not None else "gzip, deflate"


class _ZlibDecoder:
    """gzip (any number of members, up to ``MAX_GZIP_MEMBERS``) or deflate (zlib-wrapped,
    or raw as some servers send it). Bytes after the last member are ignored."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj: Any = None  # zlib's Decompress type is not importable
        self._members = 0
        self._done = False
        # deflate read as zlib-wrapped: its input so far, while it may still be raw instead
        self._replay: bytes | None = None

    def complete(self) -> bool:
        return self._obj is None

    def feed(self, data: bytes) -> Iterator[bytes]:
        while not self._done:
            if self._obj is None:
                if not data:
                    return
                if self._gzip:
                    if self._members and not data.startswith(b"\x1f"):
                        self._done = True  # trailing padding or garbage, as gzip(1) allows
                        return
                    self._members += 1
                    if self._members > MAX_GZIP_MEMBERS:
                        raise _BadEncoding(f"more than {MAX_GZIP_MEMBERS} gzip members")
                    wbits = 16 + zlib.MAX_WBITS
                elif data[0] & 0x0F == 8:
                    # An RFC 1950 header (CM=8), or raw deflate as many servers send it
                    # whose first (stored) block happens to look like one: tried as the
                    # former, replayed as raw if that fails before any output.
                    wbits, self._replay = zlib.MAX_WBITS, b""
                else:
                    wbits = -zlib.MAX_WBITS
                self._obj = zlib.decompressobj(wbits)
            obj = self._obj
            if self._replay is not None:
                self._replay = self._replay + data if len(self._replay) < _PIECE else None
            try:
                piece = obj.decompress(data, _PIECE)
            except zlib.error as exc:
                if self._replay is None:
                    raise _BadEncoding(str(exc)) from None
                data, self._replay = self._replay, None
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            if piece:
                self._replay = None
                yield piece
            if obj.eof:
                data, self._obj = obj.unused_data, None
                self._done = not self._gzip
            else:
                data = obj.unconsumed_tail
                # A full piece may leave output inside zlib even with no input left.
                if not data and len(piece) < _PIECE:
                    return


class _BrotliDecoder:
    def __init__(self) -> None:
        self._obj = _brotli.Decompressor()
        self._started = False

    def complete(self) -> bool:
        return not self._started or bool(self._obj.is_finished())

    def feed(self, data: bytes) -> Iterator[bytes]:
        obj = self._obj
        self._started = self._started or bool(data)
        try:
            if obj.is_finished():
                return  # bytes after the end of the stream are ignored
            piece = obj.process(data, output_buffer_limit=_PIECE)
            # A capped step may leave output behind even once the input is all taken.
            while piece or not obj.can_accept_more_data():
                if piece:
                    yield piece
                piece = obj.process(b"", output_buffer_limit=_PIECE)
        except _brotli.error as exc:
            raise _BadEncoding(f"brotli: {exc}") from None


class _Refuse:
    """A coding we cannot decode: fails on the first byte of body (an empty body, as in a
    304 or a HEAD response, is fine)."""

    def __init__(self, why: str) -> None:
        self._why = why

    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            raise _BadEncoding(self._why)
        yield from ()

    def complete(self) -> bool:
        return True


#: Content codings applied to one body: browsers and servers use one; a body gzipped 2,000
#: times over would otherwise cost 2,000 nested decoders (and Python's recursion limit).
MAX_CODINGS = 4


def _decoders(content_encoding: str) -> list[_Decoder]:
    """Decoders for a Content-Encoding value, in the order they apply to the body."""
    decoders: list[_Decoder] = []
    codings = content_encoding.split(",")
    if len(codings) > MAX_CODINGS:
        real = [c for c in codings if c.strip().lower() not in ("", "identity")]
        if len(real) > MAX_CODINGS:
            return [_Refuse(f"{len(real)} content codings, more than {MAX_CODINGS}")]
    for raw in reversed(codings):
        coding = raw.strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            decoders.append(_ZlibDecoder(gzip=coding != "deflate"))
        elif coding == "br":
            decoders.append(
                _BrotliDecoder() if _brotli else _Refuse("br needs the Brotli >= 1.2 package")
            )
        elif coding in ("zstd", "compress", "x-compress"):
            decoders.append(_Refuse(f"{coding} is not supported"))
        # identity, and the odd non-coding ("utf-8", "binary") servers send: body as is
    return decoders


def _decode(data: bytes, decoders: list[_Decoder]) -> Iterator[bytes]:
    if not decoders:
        yield data
        return
    first, rest = decoders[0], decoders[1:]
    for piece in first.feed(data):
        yield from _decode(piece, rest)


async def _read_body(
    resp: aiohttp.ClientResponse, limit: int, url: str, decoders: list[_Decoder]
) -> bytes:
    """Read and decode the body, failing as soon as the bytes on the wire or the
    decoded bytes pass ``limit``."""
    content = resp.content
    body = bytearray()  # one growing buffer: freed whole (not in arena-sized pieces) on failure
    wire = size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        wire += len(chunk)
        if wire > limit:
            raise FetchError(url, "too_large", f"body over max_body_bytes={limit}")
        try:
            for piece in _decode(chunk, decoders):
                size += len(piece)
                if size > limit:
                    raise FetchError(
                        url, "too_large", f"decompressed body over max_body_bytes={limit}"
                    )
                body += piece
        except _BadEncoding as exc:
            encoding = resp.headers.get("Content-Encoding", "")[:50]
            raise FetchError(url, "bad_encoding", f"Content-Encoding {encoding}: {exc}") from None
    # The HTTP message was whole, but a compressed stream cut short (a server that ran out
    # of time or disk mid-write) decodes without error to a prefix of the page.
    if not all(decoder.complete() for decoder in decoders):
        encoding = resp.headers.get("Content-Encoding", "")[:50]
        raise FetchError(url, "truncated", f"Content-Encoding {encoding}: the stream ends early")
    return bytes(body)


# -- sessions (cookie jars) -------------------------------------------------------------

#: Morsel attributes kept as they are (expiry travels as an absolute timestamp instead).
_KEPT_ATTRS = ("path", "domain", "secure", "httponly", "samesite", "comment", "version")


def _export(jar: aiohttp.CookieJar) -> JarData:
    """A jar as plain data, as ``CookieJar.save`` writes it (host-only flag and absolute
    expiry included, so that a copy on another worker matches the same requests)."""
    host_only = jar.host_only_cookies
    expirations: dict[tuple[str, str, str], float] = getattr(jar, "_expirations", {})
    data: JarData = {}
    for (domain, path), cookies in jar.cookies.items():
        group: dict[str, CookieData] = {}
        for name, morsel in cookies.items():
            cookie: CookieData = {
                "key": morsel.key, "value": morsel.value, "coded_value": morsel.coded_value,
            }  # fmt: skip
            for attr in _KEPT_ATTRS:
                if morsel[attr]:
                    cookie[attr] = morsel[attr]
            if (domain, path, name) in host_only:
                cookie["host_only"] = True
            when = expirations.get((domain, path, name))
            if when is not None:
                cookie["expires_timestamp"] = when
            group[name] = cookie
        if group:
            data[f"{domain}|{path}"] = group
    return data


def _import(data: JarData) -> aiohttp.CookieJar:
    """A new jar holding ``data`` (``_export``'s form); expired cookies are left out."""
    jar = aiohttp.CookieJar(unsafe=True)
    now = time.time()
    for compound, group in data.items():
        domain, _, _ = compound.partition("|")
        for name, cookie in group.items():
            when = cookie.get("expires_timestamp")
            if isinstance(when, int | float) and when <= now:
                continue
            morsel: Morsel[str] = Morsel()
            morsel.__setstate__(  # type: ignore[attr-defined]  # aiohttp's own way past validation
                {"key": name, "value": str(cookie.get("value", "")),
                 "coded_value": str(cookie.get("coded_value", cookie.get("value", "")))}
            )  # fmt: skip
            for attr in _KEPT_ATTRS:
                if attr in cookie and attr != "domain":
                    morsel[attr] = cookie[attr]
            if not cookie.get("host_only"):
                morsel["domain"] = domain
            if isinstance(when, int | float):
                morsel["expires"] = email.utils.formatdate(min(when, 253402300799), usegmt=True)
            try:
                jar.update_cookies([(name, morsel)], yarl.URL.build(scheme="http", host=domain))
            except ValueError:  # a host yarl refuses: the cookie cannot match any request
                continue
    return jar


def _diff(jar_id: JarId, before: JarData, after: JarData) -> list[CookieChange]:
    changes: list[CookieChange] = []
    for compound, group in after.items():
        old = before.get(compound, {})
        for name, cookie in group.items():
            if old.get(name) != cookie:
                changes.append((jar_id, compound, name, cookie))
    for compound, group in before.items():
        new = after.get(compound, {})
        for name in group:
            if name not in new:
                changes.append((jar_id, compound, name, None))
    return changes


def _morsels(cookies: Iterable[dict[str, Any]]) -> list[tuple[str, Morsel[str]]]:
    """``Request.cookies`` (plain dicts) as morsels for aiohttp's jar."""
    out = []
    for cookie in cookies:
        morsel: Morsel[str] = Morsel()
        value = cookie["value"]
        morsel.__setstate__(  # type: ignore[attr-defined]
            {"key": cookie["name"], "value": value, "coded_value": value}
        )
        for attr in ("domain", "path"):
            if cookie.get(attr):
                morsel[attr] = cookie[attr]
        if cookie.get("secure"):
            morsel["secure"] = True
        out.append((cookie["name"], morsel))
    return out


class _Target:
    """The jar one request's cookies come from and go to; ``sessions`` is None for a
    ``dont_merge_cookies`` request, whose jar is its own and is never shared."""

    __slots__ = ("jar", "jar_id", "sessions")

    def __init__(self, jar: aiohttp.CookieJar, jar_id: JarId, sessions: Sessions | None) -> None:
        self.jar, self.jar_id, self.sessions = jar, jar_id, sessions

    def update(self, headers: Sequence[str] | None, cookies: Any, url: yarl.URL) -> None:
        if self.sessions is None:
            return  # dont_merge_cookies: what the response sets is not kept (Scrapy's rule)
        jar = self.sessions.jar(self.jar_id)
        before = _export(jar)
        if headers is not None:
            jar.update_cookies_from_headers(headers, url)
        else:
            jar.update_cookies(cookies, url)
        self.sessions.changed(_diff(self.jar_id, before, _export(jar)))


_NO_URL: Final = yarl.URL()
_target: contextvars.ContextVar[_Target | None] = contextvars.ContextVar(
    "spiderfarm_cookie_target", default=None
)


class _RoutingJar(AbstractCookieJar):
    """The session's one jar: each call goes to the jar of the request being fetched
    (a context variable set around the request: its redirect hops included)."""

    @property
    def unsafe(self) -> bool:
        return True

    @property
    def quote_cookie(self) -> bool:
        return True

    @property
    def cookies(self) -> MappingProxyType[tuple[str, str], SimpleCookie]:
        return MappingProxyType({})

    @property
    def host_only_cookies(self) -> frozenset[tuple[str, str, str]]:
        return frozenset()

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Morsel[str]]:
        return iter(())

    def clear(self, predicate: Any = None) -> None:
        pass

    def clear_domain(self, domain: str) -> None:
        pass

    def update_cookies(self, cookies: Any, response_url: yarl.URL = _NO_URL) -> None:
        target = _target.get()
        if target is not None:
            target.update(None, cookies, response_url)

    def update_cookies_from_headers(self, headers: Sequence[str], response_url: yarl.URL) -> None:
        target = _target.get()
        if target is not None and headers:
            target.update(headers, None, response_url)

    def filter_cookies(self, request_url: yarl.URL) -> BaseCookie[str]:
        target = _target.get()
        return target.jar.filter_cookies(request_url) if target is not None else SimpleCookie()


class Sessions:
    """This worker's copy of the crawl's cookie jars, one aiohttp ``CookieJar`` per
    ``meta["cookiejar"]``. The frontier holds the jars: ``load`` takes its copies, and
    ``take_changes`` gives what this worker's responses (and ``Request(cookies=...)``)
    changed since, for the next exchange."""

    def __init__(self) -> None:
        self._jars: dict[JarId, aiohttp.CookieJar] = {}
        self._targets: dict[JarId, _Target] = {}
        self._changes: list[CookieChange] = []

    def jar(self, jar_id: JarId) -> aiohttp.CookieJar:
        jar = self._jars.get(jar_id)
        if jar is None:
            jar = self._jars[jar_id] = aiohttp.CookieJar(unsafe=True)
        return jar

    def target(self, request: Request) -> _Target:
        """Where ``request``'s cookies come from, after merging ``Request(cookies=...)``
        into its jar (or, with ``dont_merge_cookies``, into a jar of its own)."""
        meta = request.meta
        jar_id = jar_of(meta)
        cookies = request.cookies
        if meta and meta.get("dont_merge_cookies"):
            own = aiohttp.CookieJar(unsafe=True)
            if cookies:
                own.update_cookies(_morsels(cookies), yarl.URL(request.url, encoded=True))
            return _Target(own, jar_id, None)
        target = self._targets.get(jar_id)
        if target is None:
            target = self._targets[jar_id] = _Target(self.jar(jar_id), jar_id, self)
        if cookies:
            target.update(None, _morsels(cookies), yarl.URL(request.url, encoded=True))
        target.jar = self._jars[jar_id]
        return target

    def changed(self, changes: list[CookieChange]) -> None:
        self._changes += changes

    def take_changes(self) -> list[CookieChange]:
        """The changes since the last call, for the frontier (plain data)."""
        changes, self._changes = self._changes, []
        return changes

    def load(self, updates: JarUpdates) -> None:
        """Take the frontier's copies of these jars, keeping this worker's changes it has
        not sent yet on top."""
        for jar_id, (_, data) in updates.items():
            mine = [c for c in self._changes if c[0] == jar_id]
            if mine:
                data = {compound: dict(group) for compound, group in data.items()}
                for _, compound, name, cookie in mine:
                    if cookie is None:
                        data.get(compound, {}).pop(name, None)
                    else:
                        data.setdefault(compound, {})[name] = cookie
            self._jars[jar_id] = _import(data)

    def cookies(self, jar_id: JarId = None) -> JarData:
        """A jar's cookies as plain data (for tests and debugging)."""
        return _export(self.jar(jar_id))


# -- the fetcher ----------------------------------------------------------------------


def _payload_reason(exc: aiohttp.ClientPayloadError) -> str:
    """``disconnected`` when the peer reset the connection mid-body, ``truncated`` when it
    closed cleanly before the body was complete."""
    # aiohttp names the connection error only in the message; the cause is the parser's.
    return "disconnected" if "ConnectionResetError" in str(exc) else "truncated"


class Fetcher:
    """One aiohttp session per worker: pooled connections, timeouts, size cap, redirects."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: Sessions | None = None,
        handle_httpstatus: Iterable[int] = (),
    ) -> None:
        self.settings = settings
        # With cookies on, the jars; a Fetcher made without them keeps its own.
        self.sessions = (sessions or Sessions()) if settings.cookies_enabled else None
        # Statuses the spider handles itself: a redirect with one of them is not followed.
        self._keep = frozenset(handle_httpstatus) & _REDIRECT_STATUSES
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _GuardedResolver | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )

    async def __aenter__(self) -> Fetcher:
        s = self.settings
        headers = {"User-Agent": s.user_agent, "Accept-Encoding": ACCEPT_ENCODING}
        headers.update(s.default_headers or {})
        self._resolver = _GuardedResolver()
        connector = aiohttp.TCPConnector(
            limit=s.concurrency,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=s.verify_tls,
            resolver=self._resolver,
        )
        jar: AbstractCookieJar = (
            _RoutingJar() if self.sessions is not None else aiohttp.DummyCookieJar()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            cookie_jar=jar,
            timeout=self._timeout,
            auto_decompress=False,
            raise_for_status=False,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            max_headers=MAX_HEADERS,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    async def fetch(self, request: Request) -> Response:
        """Fetch ``request``; the response is of the kind its headers, URL and body say
        (``response_for``: ``HtmlResponse``, ``XmlResponse``, ``JsonResponse`` ...).

        Raises:
            FetchError: with a reason such as ``timeout``, ``refused``, ``dns_error``,
                ``too_large``, ``too_many_redirects``, ``bad_redirect``, ``tls_error``,
                ``truncated``, ``disconnected``, ``bad_encoding`` or ``bad_response``.
        """
        session = self._session
        assert session is not None, "use Fetcher as an async context manager"
        url = request.url
        limit = self.settings.max_body_bytes
        hops = self.settings.max_redirects
        meta = request.meta
        kept = False  # redirects this request's spider or meta handles itself
        timeout = self._timeout
        if self._keep:
            kept = True
        if meta:  # Scrapy's per-request controls (checked where the request was made)
            if meta.get("dont_redirect") or meta.get("handle_httpstatus_all"):
                kept = True
            elif meta.get("handle_httpstatus_list"):
                kept = kept or bool(_REDIRECT_STATUSES.intersection(meta["handle_httpstatus_list"]))
            if meta.get("download_timeout"):
                total = float(meta["download_timeout"])
                timeout = aiohttp.ClientTimeout(
                    total=total,
                    sock_connect=min(total, self.settings.connect_timeout_s),
                    sock_read=min(total, self.settings.read_timeout_s),
                )
        token = _target.set(self.sessions.target(request)) if self.sessions is not None else None
        try:
            # Sent exactly as made safe (yarl's own quoting would turn "%3B" into ";", a
            # different URL to many servers); safe_url again for a URL a middleware set.
            target = yarl.URL(safe_url(url), encoded=True)
            async with session.request(
                request.method,
                target,
                headers=request.headers,
                data=request.body,
                allow_redirects=hops > 0 and not kept,
                # aiohttp fails on its Nth redirect response, so N-1 hops are followed.
                max_redirects=hops + 1,
                proxy=meta.get("proxy") if meta else None,
                timeout=timeout,
            ) as resp:
                if (
                    hops == 0
                    and not kept
                    and resp.status in _REDIRECT_STATUSES
                    and "Location" in resp.headers
                ):
                    raise FetchError(url, "too_many_redirects", "max_redirects=0")
                length = resp.content_length
                if length is not None and length > limit:
                    raise FetchError(url, "too_large", f"Content-Length {length} > {limit}")
                decoders = _decoders(",".join(resp.headers.getall("Content-Encoding", ())))
                body = await _read_body(resp, limit, url, decoders)
                if resp.history:
                    # Scrapy's redirect keys, on the meta the callback sees.
                    request.meta = {
                        **(meta or {}),
                        "redirect_urls": [str(r.url) for r in resp.history],
                        "redirect_reasons": [r.status for r in resp.history],
                        "redirect_times": len(resp.history),
                    }
                return response_for(str(resp.url), resp.status, resp.headers, body, request)
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError(url, "timeout") from None
        except aiohttp.TooManyRedirects:
            raise FetchError(url, "too_many_redirects", f"more than {hops} redirects") from None
        except (aiohttp.NonHttpUrlRedirectClientError, aiohttp.InvalidUrlRedirectClientError) as e:
            raise FetchError(url, "bad_redirect", str(e)[:300]) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise FetchError(url, "tls_error", str(e.certificate_error)) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as e:
            raise FetchError(url, "tls_error", str(e)) from None
        except aiohttp.ClientConnectorDNSError as e:
            raise FetchError(url, "dns_error", str(e.os_error)) from None
        except aiohttp.ClientConnectorError as e:
            reason = (
                "refused" if isinstance(e.os_error, ConnectionRefusedError) else "connect_error"
            )
            raise FetchError(url, reason, str(e.os_error)) from None
        except aiohttp.ServerDisconnectedError:
            raise FetchError(url, "disconnected") from None
        except aiohttp.ClientPayloadError as e:
            raise FetchError(url, _payload_reason(e), str(e)[:300]) from None
        except aiohttp.ClientResponseError as e:
            raise FetchError(url, "bad_response", f"{e.status} {e.message}"[:300]) from None
        except (aiohttp.InvalidURL, ValueError, UnicodeError) as e:
            raise FetchError(url, "bad_request", str(e)[:300]) from None
        except aiohttp.ClientOSError as e:
            reason = (
                "disconnected" if e.errno in (errno.ECONNRESET, errno.EPIPE) else "network_error"
            )
            raise FetchError(url, reason, f"{type(e).__name__}: {e}"[:300]) from None
        except (aiohttp.ClientError, OSError) as e:
            raise FetchError(url, "network_error", f"{type(e).__name__}: {e}"[:300]) from None
        finally:
            if token is not None:
                _target.reset(token)
