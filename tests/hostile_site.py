"""A hostile web site: one endpoint for each way a page can attack a crawler.

``HostileSite`` serves on 127.0.0.1 (port 0, real ports read back):

- ``url(path)``: an aiohttp application, for what a server that speaks HTTP correctly
  can still do to a client: decompression bombs, endless and dripping bodies, redirect
  loops and redirects to ``file:``, mislabelled charsets, NUL bytes, binary "HTML", a
  12 MB text node, malformed markup.
- ``raw_url(path)``: an ``asyncio.start_server`` that writes broken HTTP by hand, where
  aiohttp's server is too well-behaved: resets and truncation mid-body, huge and too
  many headers, garbage status lines, a status line dripped a byte at a time.
- ``tls_url(path)``: the same application over HTTPS with a freshly made self-signed
  certificate (when ``cryptography`` or the ``openssl`` command is available).
- ``refused_url``: a port that is bound but never listens, so connecting is refused.

``case_urls()`` names every case; ``/`` links them all, plus links a crawler must skip
(``mailto:``, ``javascript:``, over-long URLs ...), so a spider can crawl the lot.

Run standalone with ``python -m tests.hostile_site --port 0``; it prints
``serving http://127.0.0.1:PORT/`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import html
import random
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from aiohttp import web

from tests.sites import serve_standalone

__all__ = [
    "HITS",
    "HUGE_TEXT_BYTES",
    "ODD_HOSTS",
    "SKIPPED_LINKS",
    "HostileSite",
    "make_hostile_app",
    "self_signed_cert",
]

HUGE_TEXT_BYTES = 12 * 2**20
_BOMB_MIB = 64  # each bomb inflates to this many MiB of zeros (some 1,000 times its size)
_PAGE = b"<!DOCTYPE html><html><head><title>%s</title></head><body><h1>%s</h1></body></html>"


def _page(title: str) -> bytes:
    esc = html.escape(title).encode()
    return _PAGE % (esc, esc)


def _html(body: bytes, content_type: str = "text/html", **headers: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type, **headers})


# -- compressed bodies ----------------------------------------------------------------


@cache
def zlib_bomb(mib: int, gzip: bool, /) -> bytes:
    """``mib`` MiB of zeros as one gzip member or zlib stream (about 1,000:1).

    Built from one fully flushed deflate block repeated, so a 256 MiB bomb takes a
    fraction of a second instead of compressing them all.
    """
    zeros = bytes(2**20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    raw = first + repeat * (mib - 1) + comp.flush()
    check = 0 if gzip else 1
    for _ in range(mib):
        check = zlib.crc32(zeros, check) if gzip else zlib.adler32(zeros, check)
    if gzip:
        size = (mib << 20) & 0xFFFFFFFF
        return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + raw + struct.pack("<II", check, size)
    return b"\x78\xda" + raw + struct.pack(">I", check)


#: Brotli bombs (MiB of zeros -> stream), made once with the Brotli package at quality 5
#: and kept as bytes, so the site needs no Brotli to serve them.
_BROTLI_BOMBS = {
    64: base64.b64decode(
        "y///PwAkAOKxQHLv//j//weABEAcFoDu/R////8AkACIwwLQvf/j//8fABIAcVgAuvd//P//A0ACIA4LQPf+"
        "j///fwBIAMRhAeje//H//w8ACYA4LADd+z/+//8BIAEQhwWge/83"
    ),
    3: base64.b64decode("m///LwAkAOKxQHLvXwA="),
}
_BROTLI_PAGE = base64.b64decode(  # _page("br page")
    "G1sAQBypUZ89rnlexNBWjFyB+DjlgLktzaIMSy54cBySv7tGNIt6ElKyUJYu/usScJkI"
)


def brotli_bomb(mib: int, /) -> bytes:
    """``mib`` (64 or 3) MiB of zeros as a Brotli stream."""
    return _BROTLI_BOMBS[mib]


def _build_bombs() -> None:
    zlib_bomb(_BOMB_MIB, True)
    zlib_bomb(_BOMB_MIB, False)


def _gzip(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


def _deflate(data: bytes, raw: bool) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


_EMPTY_GZIP_MEMBER = _gzip(b"")


def _raw_deflate_stored(data: bytes) -> bytes:
    """Raw deflate whose first block is stored, with padding bits that are not zero: legal
    (RFC 1951 says they are ignored), and its first byte has 8 in its low nibble like a
    zlib header's. Data up to 65,535 bytes, then an empty final block."""
    n = len(data)
    return b"\x08" + struct.pack("<HH", n, n ^ 0xFFFF) + data + b"\x03\x00"


def _compressed_page(coding: str) -> web.Response:
    page = _page(f"{coding} page")
    if coding == "gzip":
        body = _gzip(page)
    elif coding == "gzip-members":  # a page in three gzip members, as some servers stream
        body = b"".join(_gzip(part) for part in (page[:20], page[20:50], page[50:]))
        coding = "gzip"
    elif coding == "deflate":
        body = _deflate(page, raw=False)
    elif coding == "deflate-raw":  # raw deflate mislabelled as deflate: common in the wild
        body, coding = _deflate(page, raw=True), "deflate"
    elif coding == "deflate-raw-stored":
        body, coding = _raw_deflate_stored(page), "deflate"
    elif coding == "br":
        body = _BROTLI_PAGE
    else:
        raise web.HTTPNotFound()
    return _html(body, **{"Content-Encoding": coding})


def _truncated_page(coding: str) -> web.Response:
    """A whole HTTP message (its Content-Length is right) holding a compressed stream cut
    off part-way: the first half of a page of 100,000 bytes."""
    page = b"<html><body><h1>cut</h1><p>" + b"x" * 100_000 + b"</p></body></html>"
    if coding == "gzip":
        stream = _gzip(page)
    elif coding == "deflate":
        stream = _deflate(page, raw=False)
    else:
        stream = _BROTLI_BOMBS[3]  # no compressor is needed to cut a Brotli stream
    return _html(stream[: len(stream) // 2], **{"Content-Encoding": coding})


async def _empty_encoded(request: web.Request) -> web.Response:
    """No body at all, under a Content-Encoding: ``?status=`` (204, 304 or 200, sent
    with Content-Length: 0) and ``?coding=``."""
    status = int(request.query["status"])
    headers = {"Content-Encoding": request.query["coding"]}
    if status == 200:
        headers["Content-Length"] = "0"
    return web.Response(status=status, headers=headers)


async def _encoded(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    mib = int(request.query.get("mib", _BOMB_MIB))
    if kind in ("gzip-bomb", "deflate-bomb"):
        body = await asyncio.to_thread(zlib_bomb, mib, kind == "gzip-bomb")
        return _html(body, **{"Content-Encoding": kind.removesuffix("-bomb")})
    if kind == "br-bomb":
        return _html(brotli_bomb(mib), **{"Content-Encoding": "br"})
    if kind == "gzip-empty-members":  # 30,000 members inflating to nothing
        n = int(request.query.get("n", "30000"))
        return _html(_EMPTY_GZIP_MEMBER * n, **{"Content-Encoding": "gzip"})
    if kind == "gzip-endless-members":
        response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(_EMPTY_GZIP_MEMBER * 100)
                await asyncio.sleep(0)
        return response
    if kind == "gzip-1500-times":  # a page gzipped 1,500 times over, each coding named
        body = _page("deep")
        for _ in range(1500):
            body = _gzip(body)
        return _html(body, **{"Content-Encoding": ",".join(["gzip"] * 1500)})
    if kind == "gzip-corrupt":
        return _html(b"\x1f\x8b\x08\x00garbage, not deflate" * 10, **{"Content-Encoding": "gzip"})
    if kind == "br-corrupt":
        return _html(b"\xff\xff\xff garbage, not brotli" * 10, **{"Content-Encoding": "br"})
    if kind == "zstd":
        return _html(b"\x28\xb5\x2f\xfd not really zstd", **{"Content-Encoding": "zstd"})
    if kind == "bogus-token":  # a coding no one defines: the body is plain HTML
        return _html(_page("bogus token"), **{"Content-Encoding": "utf-8"})
    if kind.endswith("-truncated"):
        return _truncated_page(kind.removesuffix("-truncated"))
    if kind == "empty":
        return await _empty_encoded(request)
    return _compressed_page(kind)


async def _ok(request: web.Request) -> web.Response:
    return _html(_page(request.match_info["name"]))


# -- endless, slow and big bodies -----------------------------------------------------


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"<p>endless</p>\n" * 4096
    with contextlib.suppress(ConnectionError):
        while True:
            await response.write(chunk)
            await asyncio.sleep(0)
    return response


async def _drip(request: web.Request) -> web.StreamResponse:
    """One byte every ``every`` seconds (default 0.05) for ever: never idle long enough
    for a read timeout, so only a total timeout ends it (slowloris, served)."""
    every = float(request.query.get("every", "0.05"))
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        while True:
            await response.write(b".")
            await asyncio.sleep(every)
    return response


async def _stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"<html><body>and then nothing")
    await asyncio.sleep(3600)
    return response


async def _huge_content_length(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.content_length = 2**40
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(b"<html>" * 1000)
        await asyncio.sleep(3600)
    return response


async def _huge_text(request: web.Request) -> web.StreamResponse:
    """A 12 MB single text node (libxml2 refuses text nodes over 10 MB unless told)."""
    head, tail = b'<html><body><p id="t">', b"</p><p id='after'>after</p></body></html>"
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
    response.content_length = len(head) + HUGE_TEXT_BYTES + len(tail)
    await response.prepare(request)
    await response.write(head)
    block = b"x" * 2**20
    for _ in range(HUGE_TEXT_BYTES // len(block)):
        await response.write(block)
    await response.write(tail)
    await response.write_eof()
    return response


# -- redirects ------------------------------------------------------------------------


async def _redirect_loop(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/redirect/loop"})


async def _redirect_to(request: web.Request) -> web.Response:
    # Location verbatim: aiohttp's HTTPFound would parse (and refuse) a broken URL.
    return web.Response(status=302, headers={"Location": request.query["url"]})


async def _echo_headers(request: web.Request) -> web.Response:
    return web.json_response(dict(request.headers))


# -- what callbacks must survive ------------------------------------------------------

_TEXT = "café, naïve, 東京"


def _doc(head: str = "") -> str:
    return (
        f'<html><head>{head}<title>charset</title></head><body><p id="t">{_TEXT}</p></body></html>'
    )


# kind -> (body, Content-Type)
_CHARSETS: dict[str, tuple[bytes, str]] = {
    "mislabelled": (_doc().encode("utf-8"), "text/html; charset=iso-8859-1"),
    "latin1-as-utf8": (
        _doc().encode("utf-8").replace("é".encode(), b"\xe9"),
        "text/html; charset=utf-8",
    ),
    "unknown": (_doc().encode(), "text/html; charset=x-no-such-charset"),
    "undefined-codec": (_doc().encode(), "text/html; charset=undefined"),
    "binary-codec": (_doc().encode(), "text/html; charset=hex"),
    "rot13": (_doc('<meta charset="rot13">').encode(), "text/html; charset=rot13"),
    "meta-undefined": (_doc('<meta charset="undefined">').encode(), "text/html"),
    "idna": (_doc().encode(), "text/html; charset=idna"),
    "utf16-label-ascii": (_doc().encode(), "text/html; charset=utf-16"),
    "utf32-odd": (_doc().encode() + b"\x00", "text/html; charset=utf-32"),
    "bom-vs-header": (b"\xff\xfe" + _doc().encode("utf-16-le"), "text/html; charset=utf-8"),
    "empty-charset": (_doc().encode(), "text/html; charset="),
}


async def _charset(request: web.Request) -> web.Response:
    body, content_type = _CHARSETS[request.match_info["kind"]]
    return web.Response(body=body, headers={"Content-Type": content_type})


def _binary() -> bytes:
    return random.Random(5).randbytes(256 * 1024)


_MALFORMED: dict[str, bytes] = {
    "nul": b'<html><body><p id="t">a\x00b</p>\x00<di\x00v>\x00</body></html>',
    "unclosed": b'<html><body><div><p id="t">one<p>two<table><tr><td>three<a href="/x',
    "garbage": b'<<<>>><p id="t">text</p><a href=">x</a><!-- never closed <script>var a = "</p>',
    "deep": b"<html><body>" + b"<div>" * 50_000 + b'<p id="t">deep</p>' + b"</body></html>",
    "xml-decl": b'<?xml version="1.0" encoding="utf-16"?><html><p id="t">xml</p></html>',
    "control-chars": b'<html><body><p id="t">\x01\x02\x0b\x0c\x1b\x7f</p></body></html>',
    "empty": b"",
    "only-whitespace": b" \r\n\t ",
    "binary": _binary(),
}


async def _malformed(request: web.Request) -> web.Response:
    return _html(_MALFORMED[request.match_info["kind"]])


# -- the raw server -------------------------------------------------------------------

_RawHandler = Callable[[asyncio.StreamWriter], Awaitable[None]]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _raw_reset_mid_body(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n")
    w.write(b"<html><body>" + b"x" * 20000)
    await w.drain()
    await asyncio.sleep(0.05)
    _reset(w)


async def _raw_truncated(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n")
    w.write(b"<html><body>only the start")
    await w.drain()


async def _raw_truncated_chunked(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n")
    w.write(b"10\r\n<html><body>abcd\r\n")  # and no terminating 0-size chunk
    await w.drain()


async def _raw_reset_before_response(w: asyncio.StreamWriter) -> None:
    _reset(w)


async def _raw_close_before_response(w: asyncio.StreamWriter) -> None:
    pass  # the caller closes: FIN without a byte of response


async def _raw_huge_header_line(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 100_000 + b"\r\nContent-Length: 2\r\n\r\nok")
    await w.drain()


async def _raw_too_many_headers(w: asyncio.StreamWriter) -> None:
    lines = b"".join(b"X-H-%d: v\r\n" % i for i in range(10_000))
    w.write(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok")
    await w.drain()


async def _raw_garbage_status(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 abc WHAT\r\nContent-Length: 2\r\n\r\nok")
    await w.drain()


async def _raw_not_http(w: asyncio.StreamWriter) -> None:
    w.write(b"SSH-2.0-OpenSSH_9.6\r\n" + bytes(range(256)) * 4)
    await w.drain()


async def _raw_junk_charset(w: asyncio.StreamWriter) -> None:
    body = b'<html><body><p id="t">junk charset</p></body></html>'
    w.write(b'HTTP/1.1 200 OK\r\nContent-Type: text/html; charset="utf-8\x01\xff"; charset=;;\r\n')
    w.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await w.drain()


async def _raw_slow_headers(w: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 10_000:
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(0.05)


_RAW: dict[str, _RawHandler] = {
    "/reset-mid-body": _raw_reset_mid_body,
    "/truncated": _raw_truncated,
    "/truncated-chunked": _raw_truncated_chunked,
    "/reset-before-response": _raw_reset_before_response,
    "/close-before-response": _raw_close_before_response,
    "/huge-header-line": _raw_huge_header_line,
    "/too-many-headers": _raw_too_many_headers,
    "/garbage-status": _raw_garbage_status,
    "/not-http": _raw_not_http,
    "/slow-headers": _raw_slow_headers,
    "/junk-charset-header": _raw_junk_charset,
}


class _RawServer:
    """The hand-written half: reads a request head, runs the handler for its path."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def start(self, host: str) -> int:
        self.server = await asyncio.start_server(self._serve, host, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[writer] = task
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode("ascii", "replace")
            handler = _RAW.get(path)
            if handler is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                await handler(writer)
        except (OSError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent nonsense: nothing to do
        finally:
            del self._clients[writer]
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        # Aborting the connections ends the handlers still dripping (at their next write).
        tasks = list(self._clients.values())
        for writer in list(self._clients):
            writer.transport.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await self.server.wait_closed()
        self.server = None


# -- TLS ------------------------------------------------------------------------------


def self_signed_cert(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1 as ``(certfile, keyfile)`` in
    ``directory``, made with ``cryptography`` or else ``openssl``; None if neither."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            return None
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
             "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    import ipaddress

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


# -- the site -------------------------------------------------------------------------

HITS = web.AppKey("hits", list[str])
"""The ``path_qs`` of every request the application received, in arrival order."""


@web.middleware
async def _record_hit(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[HITS].append(request.path_qs)
    return await handler(request)


def make_hostile_app() -> web.Application:
    """The aiohttp half of the site (see the module docstring); ``/`` is added by
    ``HostileSite``, which knows every listener's port."""
    app = web.Application(middlewares=[_record_hit])
    app[HITS] = []
    app.router.add_get("/ok/{name}", _ok)
    app.router.add_get("/encoded/{kind}", _encoded)
    app.router.add_get("/endless", _endless)
    app.router.add_get("/drip", _drip)
    app.router.add_get("/stall", _stall)
    app.router.add_get("/huge-content-length", _huge_content_length)
    app.router.add_get("/huge-text", _huge_text)
    app.router.add_get("/redirect/loop", _redirect_loop)
    app.router.add_get("/redirect/to", _redirect_to)
    app.router.add_get("/echo-headers", _echo_headers)
    app.router.add_get("/charset/{kind}", _charset)
    app.router.add_get("/malformed/{kind}", _malformed)
    return app


_APP_CASES = [
    "/ok/healthy",
    *(f"/encoded/{k}" for k in ("gzip", "gzip-members", "deflate", "deflate-raw", "br")),
    "/encoded/deflate-raw-stored",
    *(f"/encoded/{k}-truncated" for k in ("gzip", "deflate", "br")),
    *(f"/encoded/{k}" for k in ("gzip-bomb", "deflate-bomb", "br-bomb")),
    *(f"/encoded/{k}" for k in ("gzip-empty-members", "gzip-endless-members")),
    *(f"/encoded/{k}" for k in ("gzip-corrupt", "br-corrupt", "zstd", "bogus-token",
                                 "gzip-1500-times")),
    "/endless",
    "/drip",
    "/stall",
    "/huge-content-length",
    "/huge-text",
    "/redirect/loop",
    *(f"/charset/{k}" for k in _CHARSETS),
    *(f"/malformed/{k}" for k in _MALFORMED),
]
_BAD_REDIRECTS = {
    "file": "file:///etc/passwd",
    "ftp": "ftp://127.0.0.1/secret",
    "data": "data:text/html,<h1>hi</h1>",
    "javascript": "javascript:alert(1)",
    "gopher": "gopher://127.0.0.1:70/",
    "broken-url": "http://[::1/",
}
#: Host names that must never reach a real DNS server (``.invalid`` is reserved).
ODD_HOSTS = {
    "dns-failure": "http://something.invalid/",
    "idn-host": "http://bücher.invalid/",
    "emoji-host": "http://\N{PILE OF POO}.invalid/",
    "underscore-host": "http://under_score.invalid/",
    "bad-punycode": "http://xn--zz.invalid/",
}
#: Links a crawler must skip without fetching (``follow_all`` drops them quietly).
SKIPPED_LINKS = [
    "mailto:someone@example.invalid",
    "javascript:alert(1)",
    "tel:+15555550100",
    "data:text/html,<h1>hi</h1>",
    "ftp://127.0.0.1/secret",
    "file:///etc/passwd",
    "about:blank",
    "http://127.0.0.1:99999/bad-port",
    "http://exa mple.invalid/space-in-host",
    "http://long.invalid/" + "x" * 2100,
    "http://" + "a" * 240 + ".invalid/",  # a label far over DNS's 63 characters
    "http://" + "b" * 64 + ".invalid/",
    "http://" + ".".join(["c" * 60] * 5) + ".invalid/",  # a host over 253 characters
    "",
]


class HostileSite:
    """Serve the hostile site for an ``async with`` block (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = True) -> None:
        self.host = host
        self._requested_port = port
        self._want_tls = tls
        self.app = make_hostile_app()
        self.app.router.add_get("/", self._index)
        self._runner: web.AppRunner | None = None
        self._raw = _RawServer()
        self._refused: socket.socket | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port = self.raw_port = self.refused_port = 0
        self.tls_port: int | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def raw_url(self, path: str) -> str:
        return f"http://{self.host}:{self.raw_port}/{path.lstrip('/')}"

    def tls_url(self, path: str) -> str:
        if self.tls_port is None:
            raise RuntimeError("no TLS listener: neither cryptography nor openssl is available")
        return f"https://{self.host}:{self.tls_port}/{path.lstrip('/')}"

    @property
    def refused_url(self) -> str:
        return f"http://{self.host}:{self.refused_port}/refused"

    def case_urls(self) -> dict[str, str]:
        """Every case by name (its path, or a short label) -> the URL to fetch."""
        cases = {path: self.url(path) for path in _APP_CASES}
        cases.update((path, self.raw_url(path)) for path in _RAW)
        for name, target in _BAD_REDIRECTS.items():
            cases[f"/redirect/to-{name}"] = self.url("/redirect/to?url=") + _quote(target)
        cases.update(ODD_HOSTS)
        cases["refused"] = self.refused_url
        if self.tls_port is not None:
            cases["tls-self-signed"] = self.tls_url("/ok/tls")
        return cases

    async def _index(self, request: web.Request) -> web.Response:
        links = [
            f'<li><a class="case" href="{html.escape(url)}">{html.escape(name)}</a></li>'
            for name, url in self.case_urls().items()
        ]
        links += [
            f'<li><a class="skip" href="{html.escape(u)}">skip</a></li>' for u in SKIPPED_LINKS
        ]
        body = f"<html><body><h1>hostile</h1><ul>{''.join(links)}</ul></body></html>"
        return _html(body.encode())

    async def __aenter__(self) -> HostileSite:
        # Bombs are built before serving (once per process), so serving one is instant.
        await asyncio.to_thread(_build_bombs)
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=0.5)  # fmt: skip
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
            self.port = int(runner.addresses[0][1])
            if self._want_tls:
                self._tmp = tempfile.TemporaryDirectory(prefix="hostile-tls-")
                pair = self_signed_cert(Path(self._tmp.name))
                if pair is not None:
                    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    context.load_cert_chain(*pair)
                    await web.TCPSite(runner, self.host, 0, ssl_context=context).start()
                    self.tls_port = int(runner.addresses[1][1])
            self.raw_port = await self._raw.start(self.host)
            self._refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._refused.bind((self.host, 0))  # bound, never listening: connect is refused
            self.refused_port = self._refused.getsockname()[1]
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        await self._raw.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._refused is not None:
            self._refused.close()
            self._refused = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _quote(url: str) -> str:
    return quote(url, safe="")


# -- standalone -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return serve_standalone(
        "python -m tests.hostile_site", "Serve the hostile test site.", HostileSite, argv
    )


if __name__ == "__main__":
    sys.exit(main())
