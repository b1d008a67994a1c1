"""Fetching: the only module that imports aiohttp.

Every aiohttp or socket error becomes a ``FetchError(url, reason)`` here, with a short
stable reason code; nothing of aiohttp's leaks upward or across processes.

Bodies are decompressed here, not by aiohttp, so that ``max_body_bytes`` caps both the
bytes on the wire and the decompressed bytes while they stream: a decompression bomb
costs at most the cap plus one 64 KiB piece, whatever aiohttp version is installed.
"""

from __future__ import annotations

import email.utils
import errno
import importlib
import logging
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from typing import Any, Final, Protocol

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from .errors import FetchError
from .http import Request, Response, response_for
from .protocol import RETRYABLE_REASONS
from .settings import Settings
from .urls import safe_url

logger = logging.getLogger(__name__)

__all__ = ["RETRYABLE_REASONS", "Fetcher", "retry_after_s"]


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


# -- the fetcher ----------------------------------------------------------------------


def _payload_reason(exc: aiohttp.ClientPayloadError) -> str:
    """``disconnected`` when the peer reset the connection mid-body, ``truncated`` when it
    closed cleanly before the body was complete."""
    # aiohttp names the connection error only in the message; the cause is the parser's.
    return "disconnected" if "ConnectionResetError" in str(exc) else "truncated"


class Fetcher:
    """One aiohttp session per worker: pooled connections, timeouts, size cap, redirects."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _GuardedResolver | None = None

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
        jar: aiohttp.abc.AbstractCookieJar = (
            aiohttp.CookieJar(unsafe=True) if s.cookies_enabled else aiohttp.DummyCookieJar()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            cookie_jar=jar,
            timeout=aiohttp.ClientTimeout(
                total=s.timeout_s, sock_connect=s.connect_timeout_s, sock_read=s.read_timeout_s
            ),
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
        try:
            # Sent exactly as made safe (yarl's own quoting would turn "%3B" into ";", a
            # different URL to many servers); safe_url again for a URL a middleware set.
            target = yarl.URL(safe_url(url), encoded=True)
            async with session.request(
                request.method,
                target,
                headers=request.headers,
                data=request.body,
                allow_redirects=hops > 0,
                # aiohttp fails on its Nth redirect response, so N-1 hops are followed.
                max_redirects=hops + 1,
                proxy=request.meta.get("proxy") if request.meta else None,
            ) as resp:
                if hops == 0 and resp.status in _REDIRECT_STATUSES and "Location" in resp.headers:
                    raise FetchError(url, "too_many_redirects", "max_redirects=0")
                length = resp.content_length
                if length is not None and length > limit:
                    raise FetchError(url, "too_large", f"Content-Length {length} > {limit}")
                decoders = _decoders(",".join(resp.headers.getall("Content-Encoding", ())))
                body = await _read_body(resp, limit, url, decoders)
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
