"""Fetching: the only module that imports aiohttp.

Every aiohttp or socket error becomes a ``FetchError(url, reason)`` here, with a short
stable reason code; nothing of aiohttp's leaks upward or across processes.
"""

from __future__ import annotations

import email.utils
import logging
import ssl
import time

import aiohttp

from .errors import FetchError
from .http import Request, Response
from .settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["RETRYABLE_REASONS", "Fetcher", "retry_after_s"]

#: Network failures worth another attempt (HTTP statuses are decided by settings).
RETRYABLE_REASONS = frozenset(
    {
        "timeout",
        "refused",
        "connect_error",
        "dns_error",
        "disconnected",
        "truncated",
        "network_error",
    }
)


def retry_after_s(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Fetcher:
    """One aiohttp session per worker: pooled connections, timeouts, size cap, redirects."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        s = self.settings
        headers = {"User-Agent": s.user_agent}
        headers.update(s.default_headers or {})
        connector = aiohttp.TCPConnector(
            limit=s.concurrency,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=s.verify_tls,
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
            auto_decompress=True,
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, request: Request) -> Response:
        """Fetch ``request``.

        Raises:
            FetchError: with a reason such as ``timeout``, ``refused``, ``dns_error``,
                ``too_large``, ``too_many_redirects``, ``bad_redirect``, ``tls_error``,
                ``truncated``, ``disconnected`` or ``bad_response``.
        """
        session = self._session
        assert session is not None, "use Fetcher as an async context manager"
        url = request.url
        limit = self.settings.max_body_bytes
        try:
            async with session.request(
                request.method,
                url,
                headers=request.headers,
                data=request.body,
                allow_redirects=True,
                max_redirects=self.settings.max_redirects,
            ) as resp:
                length = resp.content_length
                if length is not None and length > limit:
                    raise FetchError(url, "too_large", f"Content-Length {length} > {limit}")
                body = await _read_capped(resp.content, limit, url)
                return Response(str(resp.url), resp.status, resp.headers, body, request)
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError(url, "timeout") from None
        except aiohttp.TooManyRedirects:
            raise FetchError(url, "too_many_redirects") from None
        except (aiohttp.NonHttpUrlRedirectClientError, aiohttp.InvalidUrlRedirectClientError) as e:
            raise FetchError(url, "bad_redirect", str(e)) from None
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
            raise FetchError(url, "truncated", str(e)) from None
        except aiohttp.ClientResponseError as e:
            raise FetchError(url, "bad_response", f"{e.status} {e.message}") from None
        except (aiohttp.InvalidURL, ValueError, UnicodeError) as e:
            raise FetchError(url, "bad_request", str(e)) from None
        except (aiohttp.ClientError, OSError) as e:
            raise FetchError(url, "network_error", f"{type(e).__name__}: {e}") from None


async def _read_capped(content: aiohttp.StreamReader, limit: int, url: str) -> bytes:
    """Read the (decompressed) body, failing as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise FetchError(url, "too_large", f"body over max_body_bytes={limit}")
        chunks.append(chunk)
    return b"".join(chunks)
