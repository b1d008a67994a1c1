"""Tests for spiderfarm.urls: which URLs we fetch, host keys, and fingerprints."""

from __future__ import annotations

import hashlib
import random
import socket
from typing import Any

import pytest
from w3lib.url import canonicalize_url

from spiderfarm.http import Request
from spiderfarm.urls import (
    MAX_URL_LENGTH,
    SAFE_CHARS,
    Fingerprinter,
    _already_canonical,
    authority_of,
    host_allowed,
    host_of,
    ip_key_from_addrinfo,
    ip_key_nowait,
    ip_key_of,
    safe_url,
)


def test_safe_url_returns_an_already_safe_url_unchanged() -> None:
    url = "https://example.com/a/b?x=1&y=%20#top"
    assert safe_url(url) == url


def test_safe_chars_are_what_w3lib_leaves_alone_and_every_other_character_is_escaped() -> None:
    """SAFE_CHARS lets URLs skip w3lib; each printable ASCII character, in a path, a query
    and a fragment, gives exactly what w3lib's safe_url_string gives (Scrapy's Request
    URL), the brackets included (w3lib escapes them: "%5B")."""
    from w3lib.url import safe_url_string

    for code in range(0x21, 0x7F):
        c = chr(code)
        url = f"http://a.test/p{c}q?k{c}v#f{c}g"
        expected = safe_url_string(url)
        if c != "#":  # the fragment's mark: w3lib escapes only those after the first
            assert (expected == url) == (c in SAFE_CHARS), repr(c)
        if c != "\\":  # a backslash is a slash to urlsplit: safe_url refuses the host
            assert safe_url(url) == expected, repr(c)
    assert safe_url("http://a.test/x[1]?a[]=1#f[2]") == "http://a.test/x%5B1%5D?a%5B%5D=1#f%5B2%5D"
    assert safe_url("http://[::1]:8080/x[1]") == "http://[::1]:8080/x%5B1%5D"


def test_safe_url_encodes_an_idn_host_as_punycode_and_escapes_the_rest() -> None:
    assert (
        safe_url("http://bücher.example/straße?q=ä b#frag")
        == "http://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4%20b#frag"
    )


def test_safe_url_strips_surrounding_whitespace_and_escapes_inner_spaces() -> None:
    assert safe_url("  http://example.com/a b  ") == "http://example.com/a%20b"


def test_safe_url_accepts_exactly_the_length_limit_and_rejects_one_more() -> None:
    prefix = "http://example.com/"
    at_limit = prefix + "a" * (MAX_URL_LENGTH - len(prefix))
    assert safe_url(at_limit) == at_limit
    with pytest.raises(ValueError, match=r"^URL is 2084 characters, over the 2083 limit: "):
        safe_url(at_limit + "a")


def test_safe_url_counts_the_length_after_escaping() -> None:
    # 700 "é" are 700 characters raw but 4,200 once percent-encoded.
    with pytest.raises(ValueError, match=r"^URL is 4219 characters, over the 2083 limit"):
        safe_url("http://example.com/" + "é" * 700)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://example.com:99999/",
            "invalid URL 'http://example.com:99999/': Port out of range 0-65535",
        ),
        (
            "http://example.com:abc/",
            "invalid URL 'http://example.com:abc/': "
            "Port could not be cast to integer value as abc",  # w3lib's words
        ),
        ("http://[oops/", "invalid URL 'http://[oops/': Invalid IPv6 URL"),
    ],
)
def test_safe_url_rejects_a_bad_port_or_host(url: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        safe_url(url)
    assert str(info.value) == message


def test_safe_url_hints_at_a_missing_scheme() -> None:
    with pytest.raises(ValueError) as info:
        safe_url("example.com/page")
    assert str(info.value) == (
        "unsupported URL scheme '' in 'example.com/page' (missing scheme? write http://...); "
        "only http and https are fetched"
    )


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("ftp://example.com/file.txt", "ftp"),
        ("file:///etc/passwd", "file"),
        ("mailto:someone@example.com", "mailto"),
        ("javascript:void(0)", "javascript"),
    ],
)
def test_safe_url_rejects_schemes_other_than_http_and_https(url: str, scheme: str) -> None:
    with pytest.raises(ValueError) as info:
        safe_url(url)
    assert str(info.value) == (
        f"unsupported URL scheme {scheme!r} in {url!r}; only http and https are fetched"
    )


@pytest.mark.parametrize("url", ["http:///path", "http://"])
def test_safe_url_rejects_a_url_without_a_host(url: str) -> None:
    with pytest.raises(ValueError) as info:
        safe_url(url)
    assert str(info.value) == f"URL has no host: {url!r}"


@pytest.mark.parametrize("value", [b"http://example.com/", 5, None])
def test_safe_url_rejects_a_non_string(value: object) -> None:
    with pytest.raises(ValueError, match=r"^URL must be a str, got "):
        safe_url(value)  # type: ignore[arg-type]


def test_safe_url_rejects_a_space_inside_the_host() -> None:
    with pytest.raises(ValueError) as info:
        safe_url("http://exa mple.com/")
    assert str(info.value) == "invalid host name 'exa mple.com' in 'http://exa mple.com/'"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://Example.COM:8080/x", "example.com:8080"),
        ("http://Example.COM/x", "example.com"),
        ("https://sub.example.com/", "sub.example.com"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("not a url", ""),
    ],
)
def test_host_of_is_the_lower_case_host_with_an_explicit_port(url: str, host: str) -> None:
    assert host_of(url) == host


# -- the politeness key by IP address ----------------------------------------------------


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (host, port) ``ip_key_of`` asks the resolver about; the answers are real."""
    asked: list[tuple[str, int]] = []
    real = socket.getaddrinfo

    def counting(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        asked.append((host, port))
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return asked


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://127.0.0.1:8000/a", "127.0.0.1"),
        ("https://192.0.2.7/", "192.0.2.7"),
        ("http://[::1]:8080/x", "[::1]"),
        ("http://[2001:DB8:0:0::1]/", "[2001:db8::1]"),
        ("http://[::ffff:192.0.2.7]/", "192.0.2.7"),
    ],
    ids=["ipv4", "ipv4-https", "ipv6", "ipv6-normalised", "ipv4-mapped-ipv6"],
)
def test_an_ip_literal_host_is_its_own_ip_key_without_a_lookup(
    url: str, key: str, lookups: list[tuple[str, int]]
) -> None:
    assert ip_key_nowait(url) == key
    assert ip_key_of(url) == key
    assert lookups == []


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://nothing.invalid:8080/a", "nothing.invalid:8080"),
        ("http://Shop.Invalid/", "shop.invalid"),
        ("http://" + "a" * 64 + ".example/", "a" * 64 + ".example"),
    ],
    ids=["invalid-with-port", "invalid", "label-over-63"],
)
def test_a_host_that_never_resolves_falls_back_to_its_host_key_without_a_lookup(
    url: str, key: str, lookups: list[tuple[str, int]]
) -> None:
    assert ip_key_nowait(url) == key == host_of(url)
    assert ip_key_of(url) == key
    assert lookups == []


def test_a_host_that_does_not_resolve_falls_back_to_its_host_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert ip_key_nowait("http://gone.example:81/x") == ""  # a name: it needs a lookup
    assert ip_key_of("http://gone.example:81/x") == "gone.example:81"
    assert ip_key_of("https://Gone.Example/") == "gone.example"


def test_localhost_is_keyed_by_the_address_it_resolves_to(
    lookups: list[tuple[str, int]],
) -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", 80)}
    if addresses != {"127.0.0.1"}:
        pytest.skip(f"localhost resolves to {sorted(addresses)} here, not only to 127.0.0.1")
    lookups.clear()
    assert ip_key_nowait("http://localhost:8000/") == ""
    assert ip_key_of("http://localhost:8000/") == "127.0.0.1"
    assert ip_key_of("https://LOCALHOST/") == "127.0.0.1"
    assert lookups == [("localhost", 8000), ("localhost", 443)]


V4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80))
V4_OTHER = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.2", 80))
V6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 80, 0, 0))
V6_OTHER = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::2", 80, 0, 0))


@pytest.mark.parametrize(
    ("infos", "key"),
    [
        ([V6, V4, V4_OTHER], "192.0.2.1"),
        ([V4_OTHER, V6, V4], "192.0.2.2"),
        ([V6_OTHER, V6], "[2001:db8::2]"),
        ([], ""),
    ],
    ids=["first-ipv4-after-ipv6", "first-ipv4", "first-ipv6-without-ipv4", "no-address"],
)
def test_the_ip_key_is_the_first_ipv4_address_else_the_first_ipv6(
    infos: list[tuple[Any, ...]], key: str
) -> None:
    assert ip_key_from_addrinfo(infos) == key


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("http://example.com:8080/a/b?c", "http://example.com:8080"),
        ("https://[::1]/", "https://[::1]"),
        ("http://example.com", "http://example.com"),
    ],
)
def test_authority_of_is_scheme_and_authority(url: str, authority: str) -> None:
    assert authority_of(url) == authority


def test_host_allowed_with_an_empty_allow_list_allows_every_host() -> None:
    assert host_allowed("other.org", frozenset()) is True
    assert host_allowed("example.com", frozenset()) is True


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.com", True),
        ("www.example.com", True),
        ("a.b.example.com", True),
        ("evil-example.com", False),
        ("notexample.com", False),
        ("example.com.evil.net", False),
        ("com", False),
        ("other.org", False),
    ],
)
def test_host_allowed_takes_subdomains_but_not_suffix_tricks(host: str, allowed: bool) -> None:
    assert host_allowed(host, frozenset({"example.com", "test.net"})) is allowed


def test_fingerprint_ignores_query_order_and_fragment() -> None:
    fp = Fingerprinter()
    assert fp.fingerprint("http://example.com/p?b=2&a=1#x") == fp.fingerprint(
        "http://example.com/p?a=1&b=2"
    )
    assert fp.canonical("http://example.com/p?b=2&a=1#x") == "http://example.com/p?a=1&b=2"


@pytest.mark.parametrize(
    ("variant", "url"),
    [
        ("HTTP://example.com/a", "http://example.com/a"),
        ("Https://example.com/a", "https://example.com/a"),
        ("http://example.com:/x", "http://example.com/x"),
        ("http://example.com:080/x", "http://example.com:80/x"),
        ("http://[::FFFF:1.2.3.4]/x", "http://[::ffff:102:304]/x"),
    ],
)
def test_one_page_has_one_fingerprint_however_its_url_is_spelt(variant: str, url: str) -> None:
    # Each variant is a valid Request URL (made safe as Scrapy's Request makes it) that
    # w3lib canonicalises to ``url``; the shortcut past w3lib must not give the variant a
    # fingerprint of its own.
    from w3lib.url import safe_url_string

    fp = Fingerprinter()
    assert Request(variant).url == safe_url_string(variant)
    assert fp.canonical(variant) == fp.canonical(url) == canonicalize_url(variant)
    assert fp.fingerprint(variant) == fp.fingerprint(url)


def test_fingerprint_differs_by_path_method_and_body() -> None:
    fp = Fingerprinter()
    base = fp.fingerprint("http://example.com/p")
    assert fp.fingerprint("http://example.com/q") != base
    assert fp.fingerprint("http://example.com/p", "POST") != base
    post_a = fp.fingerprint("http://example.com/p", "POST", b"a=1")
    post_b = fp.fingerprint("http://example.com/p", "POST", b"a=2")
    assert len({base, post_a, post_b}) == 3
    # An empty body is no body.
    assert fp.fingerprint("http://example.com/p", "POST", b"") == fp.fingerprint(
        "http://example.com/p", "POST"
    )


def test_fingerprint_is_a_stable_signed_64_bit_int_across_instances() -> None:
    a = Fingerprinter().fingerprint("http://example.com/p?b=2&a=1")
    b = Fingerprinter().fingerprint("http://example.com/p?a=1&b=2")
    assert a == b
    # Signed, so that it fits SQLite's INTEGER in the job journal unchanged.
    digest = hashlib.blake2b(b"GET http://example.com/p?a=1&b=2", digest_size=8).digest()
    assert a == int.from_bytes(digest, "big", signed=True)
    assert -(2**63) <= a < 2**63


def test_fingerprints_use_the_whole_signed_range() -> None:
    fp = Fingerprinter()
    values = [fp.fingerprint(f"http://example.com/{i}") for i in range(64)]
    assert all(-(2**63) <= v < 2**63 for v in values)
    assert any(v < 0 for v in values)
    assert any(v >= 0 for v in values)


def test_fingerprinter_cache_stays_within_its_bound_and_answers_stay_correct() -> None:
    small, big = Fingerprinter(max_cache=3), Fingerprinter()
    urls = [f"http://example.com/{i}?b=1&a=2" for i in range(10)]
    for url in urls + urls:
        assert small.fingerprint(url) == big.fingerprint(url)
        assert len(small._cache) <= 3
    assert len(big._cache) == 10


def test_the_canonical_shortcut_agrees_with_w3lib() -> None:
    """Fingerprinter.canonical skips w3lib for URLs it would return unchanged; for every
    URL here the result must be exactly w3lib's, shortcut taken or not."""
    from w3lib.url import canonicalize_url

    from spiderfarm.urls import _already_canonical

    chars = "abcXYZ019-._~:/@!$&'()*+,;=[]%?#"
    urls = [
        "http://a.test", "http://A.test/x", "http://a.test//x", "http://a.test/./x",
        "http://a.test/x/../y", "http://u:p@a.test/x", "https://a.test:443/x",
        "http://[::1]:8080/x", "http://a.test/p/", "http://a.test/a%2fb", "http://a.test/?b=1&a=2",
    ]  # fmt: skip
    for c in chars:
        urls += [f"http://a.test/p{c}q", f"http://a.test/{c}", f"https://a.test:8080/x/{c}{c}/y"]
    fingerprinter = Fingerprinter()
    shortcuts = 0
    for url in urls:
        assert fingerprinter.canonical(url) == canonicalize_url(url), url
        shortcuts += _already_canonical(url)
    assert shortcuts > 50  # the shortcut is really taken for the ordinary ones


def _generated_url(rnd: random.Random, path_chars: str) -> str:
    """Mostly ordinary URLs, with one of the spellings w3lib rewrites now and then."""
    odd = rnd.random() < 0.5
    scheme = rnd.choice(["HTTP", "Https", "ftp", "http"] if odd else ["http", "https"])
    user = rnd.choice(["u@", "u:p@", "U@", "a@b@", "u=v@", "@"]) if rnd.random() < 0.1 else ""
    host = rnd.choice(
        ["A.test", "a.test.", "a_b.test", "[::1]", "[::FFFF:1.2.3.4]", "[::ffff:1.2.3.4]", "",
         "a]", "xn--bcher-kva.ch", "127.0.0.1"]
        if rnd.random() < 0.2 else ["a.test", "b-c.a.test", "a1.test"]
    )  # fmt: skip
    port = rnd.choice(
        [":", ":80", ":443", ":8080", ":080", ":0", ":00", ":65535", ":65536", ":1234567", ":x"]
        if rnd.random() < 0.3 else [""]
    )  # fmt: skip
    sep = rnd.choice(["", "?", "#", "//"]) if rnd.random() < 0.1 else "/"
    path = "".join(rnd.choice(path_chars) for _ in range(rnd.randint(0, 10)))
    return f"{scheme}://{user}{host}{port}{sep}{path}"


def test_the_canonical_shortcut_agrees_with_w3lib_on_generated_urls() -> None:
    """A seeded fuzz: every URL the shortcut accepts is already w3lib's canonical form
    (w3lib lower-cases the scheme, drops an empty port and leading zeros, rewrites IPv6
    literals and escapes some user info: the shortcut must leave all of those to it)."""
    rnd = random.Random(20240611)
    path_chars = "".join(sorted(SAFE_CHARS)) + "abcdefgh/-_" * 6
    taken = 0
    for _ in range(5000):
        url = _generated_url(rnd, path_chars)
        if _already_canonical(url):
            taken += 1
            try:
                canonical = canonicalize_url(url)
            except ValueError as exc:
                pytest.fail(f"the shortcut took {url!r}, which w3lib refuses: {exc}")
            assert canonical == url
    assert taken > 500  # the shortcut is really taken for the ordinary ones


def test_the_canonical_form_without_the_fragment_agrees_with_w3lib() -> None:
    """Fingerprinter.canonical cuts the fragment off before anything else (the shortcut
    then takes "page.html#section"): w3lib's canonical form of every URL here must be
    the same, whatever the fragment holds."""
    rnd = random.Random(20261202)
    path_chars = "".join(sorted(SAFE_CHARS)) + "abcdefgh/-_" * 6
    fragments = ["", "#", "#a", "#a?b=1", "#a#b", "#%41", "#é", "#a b", "#/../x", "#?"]
    fingerprinter = Fingerprinter()
    for _ in range(3000):
        url = _generated_url(rnd, path_chars) + rnd.choice(fragments)
        try:
            expected = canonicalize_url(url)
        except ValueError:
            continue
        assert fingerprinter.canonical(url) == expected, url
    assert fingerprinter.fingerprint("http://a.test/p.html#s") == fingerprinter.fingerprint(
        "http://a.test/p.html"
    )


def test_safe_url_is_w3libs_safe_url_string_on_generated_urls() -> None:
    """A seeded fuzz: for every URL safe_url accepts, its result is exactly w3lib's
    safe_url_string (Scrapy's Request URL), whether it took the shortcut past w3lib
    (``in_safe_form``) or not; the shortcut is taken only for URLs w3lib leaves alone."""
    from w3lib.url import safe_url_string

    from spiderfarm.urls import in_safe_form

    rnd = random.Random(20261202)
    path_chars = "".join(sorted(SAFE_CHARS)) + "abcdefgh/-_" * 6 + "[]'^ {}|\\\"<>`é"
    taken = checked = 0
    for _ in range(5000):
        url = _generated_url(rnd, path_chars)
        try:
            w3lib_made: str | None = safe_url_string(url)
        except ValueError:  # a port out of range, say: safe_url refuses it too
            w3lib_made = None
        if in_safe_form(url):
            taken += 1
            assert w3lib_made in (url, None), url
        try:
            made = safe_url(url)
        except ValueError:
            continue
        checked += 1
        assert made == w3lib_made, url
    assert taken > 1000 and checked > 3000
