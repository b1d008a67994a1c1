"""URL policy: which URLs we fetch, their canonical form, fingerprint and host key.

Canonicalisation is w3lib's (sorted query, no fragment, normalised escapes); this module
only adds a cache, because the same link appears on many pages and canonicalising costs
more than fetching decisions should.

Politeness keys: ``host_of`` (host and port), ``domain_of`` (registered domain) and, by
IP address, ``ip_key_nowait`` (no lookup) with ``ip_key_from_addrinfo`` (after one) or
``ip_key_of`` (blocking: never on an event loop), so that the rule is written once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from w3lib.url import canonicalize_url, safe_url_string

__all__ = [
    "FETCHABLE_SCHEMES",
    "MAX_URL_LENGTH",
    "SAFE_CHARS",
    "Fingerprinter",
    "authority_of",
    "domain_of",
    "host_allowed",
    "host_of",
    "in_safe_form",
    "ip_key_from_addrinfo",
    "ip_key_nowait",
    "ip_key_of",
    "lookup_address",
    "safe_url",
]

FETCHABLE_SCHEMES = frozenset({"http", "https"})
# The longest URL the common browsers accept; longer ones are almost always traps.
MAX_URL_LENGTH = 2083
# After IDNA encoding a host is letters, digits, hyphens, dots and (in the wild,
# though not in the RFCs) underscores; or an IPv6 literal.
_HOST_RE = re.compile(r"^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|[0-9a-f:.]+)$")
#: The characters w3lib's safe_url_string leaves as they are in a URL's path, query and
#: fragment alike: not "[" and "]" (escaped there; only an IPv6 host keeps them), not "'"
#: (escaped in an http(s) query, the WHATWG way).
SAFE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#@!$&()*+,;=%"
)


#: URLs ``safe_url`` passed, as they came and as it returned them: a crawl's pages link
#: to the same URLs again and again. Started over past ``_SAFE_MAX``.
_SAFE: dict[str, str] = {}
_SAFE_MAX = 20_000


def safe_url(url: str) -> str:
    """Return ``url`` percent-encoded and with an IDNA host, or raise ValueError.

    Most URLs are already safe ASCII; they skip w3lib's slower path, and a URL passed
    before is answered from a cache.
    """
    known = _SAFE.get(url) if type(url) is str else None
    if known is not None:
        return known
    made = _safe_url(url)
    if len(_SAFE) >= _SAFE_MAX:
        _SAFE.clear()
    _SAFE[url] = made
    return made


def in_safe_form(url: str) -> bool:
    """Whether w3lib's safe_url_string (Scrapy's Request URL) returns ``url`` unchanged,
    for the common URL: a lower-case ``http``/``https`` scheme, safe ASCII, a lower-case
    host with no user info, a port (if any) of digits without a leading zero, a path (or
    nothing) after the authority, at most one ``#``, and nothing w3lib drops (an empty
    query or fragment, empty last-segment params). Others go to w3lib (tests/test_urls.py
    checks this against it)."""
    if not (url.startswith(("http://", "https://")) and url.isascii()):
        return False
    if not SAFE_CHARS.issuperset(url):
        return False
    start = url.find("//") + 2
    end = len(url)
    for mark in "/?#":
        at = url.find(mark, start)
        if at != -1 and at < end:
            end = at
    authority = url[start:end]
    if end < len(url) and url[end] != "/":
        return False  # no path before the query or fragment: w3lib adds "/"
    if "@" in authority or authority.lower() != authority:
        return False
    colon = authority.find(":")
    if colon != -1:
        port = authority[colon + 1 :]
        if not port.isdigit() or port[0] == "0":
            return False
    return (
        url[-1] not in "?#;"
        and url.count("#") < 2
        and "?#" not in url
        and ";?" not in url
        and ";#" not in url
    )


def _safe_url(url: str) -> str:
    if not isinstance(url, str):
        raise ValueError(f"URL must be a str, got {type(url).__name__}: {url!r}")
    url = url.strip()
    if not in_safe_form(url):
        try:
            url = safe_url_string(url)
        except (UnicodeError, ValueError) as exc:
            raise ValueError(f"invalid URL {url[:200]!r}: {exc}") from None
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(
            f"URL is {len(url)} characters, over the {MAX_URL_LENGTH} limit: {url[:80]!r}..."
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"invalid URL {url[:200]!r}: {exc}") from None
    del port
    if parts.scheme not in FETCHABLE_SCHEMES:
        hint = " (missing scheme? write http://...)" if not parts.scheme else ""
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r} in {url[:200]!r}{hint}; "
            "only http and https are fetched"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"URL has no host: {url[:200]!r}")
    if not _HOST_RE.match(host):
        raise ValueError(f"invalid host name {host[:100]!r} in {url[:200]!r}")
    if len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
        raise ValueError(f"host name too long (DNS allows 253, labels 63): {host[:100]!r}")
    return url


def host_of(url: str) -> str:
    """The politeness key of ``url`` by host: its lower-case host, with the port if the
    URL names one (two servers on one machine are two sites)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = parts.port
    return f"{host}:{port}" if port else host


_extract: Any = None


def domain_of(url: str) -> str:
    """The politeness key of ``url`` by registered domain (``a.b.example.co.uk`` ->
    ``example.co.uk``), from the public suffix list bundled with tldextract (offline)."""
    global _extract
    if _extract is None:
        # Imported here, not at the top: tldextract (and the requests library it pulls
        # in) adds ~0.1 s to every worker's start, and only politeness_key=domain uses it.
        import tldextract

        _extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    host = urlsplit(url).hostname or ""
    parts = _extract(host)
    if hasattr(parts, "top_domain_under_public_suffix"):  # tldextract >= 5.3
        domain = parts.top_domain_under_public_suffix
    else:
        domain = parts.registered_domain
    return str(domain or host)


def authority_of(url: str) -> str:
    """``scheme://authority`` of an absolute URL, by slicing (it runs for every link):
    the part politeness keys depend on, and so what they are cached by."""
    end = url.find("/", url.find("//") + 2)
    return url if end == -1 else url[:end]


def _address_key(address: str) -> str:
    """The politeness key of one IP address: ``1.2.3.4``, or ``[v6]`` (bracketed like
    ``host_of``); an IPv4-mapped IPv6 address is its IPv4 address. ``""`` if not an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"[{ip}]"
    return str(ip)


def _never_resolves(host: str) -> bool:
    """True for a host no DNS server can answer: ``.invalid`` (RFC 6761) and names DNS
    cannot carry (fetch.py refuses to look these up too)."""
    name = host.rstrip(".")
    if not name or name == "invalid" or name.endswith(".invalid") or len(name) > 253:
        return True
    return any(not 0 < len(label) <= 63 for label in name.split("."))


def ip_key_nowait(url: str) -> str:
    """The politeness key of ``url`` by IP address if it needs no DNS lookup, else ``""``.

    An IP literal host is its own key (``http://[::1]:8080/`` -> ``[::1]``); a host that
    can never resolve falls back to ``host_of(url)``. For ``""``, look the host up and
    take ``ip_key_from_addrinfo(answer) or host_of(url)`` (``ip_key_of`` does it all).
    """
    host = urlsplit(url).hostname or ""
    key = _address_key(host)
    if key:
        return key
    return host_of(url) if _never_resolves(host) else ""


def ip_key_from_addrinfo(infos: Iterable[tuple[Any, ...]]) -> str:
    """The politeness key from a ``getaddrinfo`` answer: its first IPv4 address, else its
    first IPv6 address; ``""`` if it has neither."""
    first_v6 = ""
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            return _address_key(sockaddr[0])
        if family == socket.AF_INET6 and not first_v6:
            first_v6 = _address_key(sockaddr[0])
    return first_v6


def lookup_address(url: str) -> tuple[str, int]:
    """``(host, port)`` to give ``getaddrinfo`` for ``url``'s politeness key."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def ip_key_of(url: str) -> str:
    """The politeness key of ``url`` by IP address, from the system resolver (blocking):
    the first IPv4 address, else the first IPv6; an IP literal is its own key; a host
    that does not resolve falls back to ``host_of(url)``. Never raises."""
    key = ip_key_nowait(url)
    if key:
        return key
    host, port = lookup_address(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        infos = []
    return ip_key_from_addrinfo(infos) or host_of(url)


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """True when ``host`` (a politeness key, port allowed) is one of ``allowed`` or a
    subdomain of one (Scrapy's rule)."""
    if not allowed or host in allowed:
        return True
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in allowed:
        return True
    dot = host.find(".")
    while dot != -1:
        if host[dot + 1 :] in allowed:
            return True
        dot = host.find(".", dot + 1)
    return False


def _already_canonical(url: str) -> bool:
    """True for the common URL w3lib's canonicalize_url returns unchanged: safe ASCII,
    a lower-case ``http``/``https`` scheme and authority without user info or IPv6 literal,
    a port (if any) of digits with no leading zero, a path, and no query, fragment, escape,
    params or dot segment (tests/test_urls.py checks this against w3lib)."""
    if not (url.startswith(("http://", "https://")) and url.isascii()):
        return False
    if not SAFE_CHARS.issuperset(url):
        return False
    start = url.find("//") + 2
    slash = url.find("/", start)
    if slash == -1:
        return False
    authority = url[start:slash]
    # w3lib rewrites IPv6 literals ("[::FFFF:1.2.3.4]" -> "[::ffff:102:304]") and escapes
    # some user-info characters ("a@b@" -> "a%40b@"); both are rare, so left to it.
    if authority != authority.lower() or "@" in authority or "[" in authority or "]" in authority:
        return False
    host, colon, port = authority.partition(":")
    if not host:
        return False
    # w3lib drops an empty port and leading zeros ("a.com:" -> "a.com", ":080" -> ":80"),
    # and refuses one over 65535.
    if colon and not (port.isdigit() and port[0] != "0" and int(port[:6]) <= 65535):
        return False
    # No query, fragment, escape, params or dot segment (spelt out: any() over a generator
    # costs more than the five tests).
    return not ("?" in url or "#" in url or "%" in url or ";" in url or "/." in url)


class Fingerprinter:
    """Computes request fingerprints: 64-bit hashes of method, canonical URL and body.

    64 bits keep the server's seen-set small; the chance of a false "seen" is about
    n²/2⁶⁵, under one in a million for a hundred-million-URL crawl.
    """

    __slots__ = ("_cache", "_max_cache")

    def __init__(self, max_cache: int = 200_000) -> None:
        self._cache: dict[str, str] = {}
        self._max_cache = max_cache

    def canonical(self, url: str) -> str:
        # The fragment is not part of the canonical URL (w3lib drops it whatever it is);
        # without it, a link to "page.html#section" takes the fast path.
        if "#" in url:
            url = url.partition("#")[0]
        if _already_canonical(url):
            return url
        canon = self._cache.get(url)
        if canon is None:
            canon = canonicalize_url(url)
            if len(self._cache) >= self._max_cache:
                self._cache.clear()
            self._cache[url] = canon
        return canon

    def fingerprint(self, url: str, method: str = "GET", body: bytes | None = None) -> int:
        data = f"{method} {self.canonical(url)}".encode()
        if body:
            data += b" " + body
        # Signed, so that it fits SQLite's INTEGER in the job journal as it is.
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)
