"""Does ``follow_all`` find exactly the links a spider finds with the selector?

``follow_all(css=...)`` takes shortcuts: a regex and w3lib find ``<base href>``, and
root-relative links skip ``urljoin`` and re-validation. This module computes the same
links the slow way, from the parsed tree alone, so any page can be checked:

    assert_links_agree(response)            # in a test: raises AssertionError, with the diff
    link_disagreements(response)            # [] or what differs, for a corpus run

or, over saved pages (each file is served as if fetched from ``BASE`` + its path)::

    python -m tests.linkcheck --base http://example.org/doc/ [--content-type text/html] DIR...
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from spiderfarm.http import JsonResponse, Request, Response, TextResponse, response_for
from spiderfarm.urls import safe_url

__all__ = [
    "assert_links_agree",
    "link_disagreements",
    "selector_base_url",
    "selector_links",
]

_HTML5_WHITESPACE = " \t\n\r\x0c"


def _markup(response: Response) -> bool:
    return isinstance(response, TextResponse) and not isinstance(response, JsonResponse)


def selector_base_url(response: Response) -> str:
    """The base URL as the parsed tree declares it: the first ``<base>`` element (in any
    namespace) with an ``href``; an empty one, or one ``safe_url`` refuses, means the
    response's own URL."""
    if not _markup(response):
        return response.url
    hrefs = response.xpath("//*[local-name()='base']/@href").getall()
    if not hrefs or not (href := hrefs[0].strip(_HTML5_WHITESPACE)):
        return response.url
    try:
        return safe_url(urljoin(response.url, href))
    except ValueError:
        return response.url


def is_self_link(response: Response, base: str, href: str) -> bool:
    """A link to a fragment of the page being answered, which follow_all skips: the farm
    has that request (unless it was dont_filter), so it could only be a duplicate."""
    request = response.request
    return (
        href.startswith("#")
        and base == response.url == request.url
        and not request.dont_filter
        and request.method == "GET"
        and request.body is None
    )


def selector_links(response: Response, css: str = "a") -> list[str]:
    """What ``response.follow_all(css=css)`` must give: the ``href`` of every element the
    selector finds, joined to ``selector_base_url``, kept if ``Request`` accepts it as an
    http(s) URL. Nothing for a binary or JSON response."""
    if not _markup(response):
        return []
    query = ", ".join(f"{part.strip()}::attr(href)" for part in css.split(","))
    base = selector_base_url(response)
    urls = []
    for href in response.css(query).getall():
        if not (href := href.strip()) or is_self_link(response, base, href):
            continue
        with contextlib.suppress(ValueError):  # a link urljoin or Request refuses
            absolute = urljoin(base, href)
            if urlsplit(absolute).scheme in ("http", "https"):
                urls.append(Request(absolute).url)
    return urls


def link_disagreements(response: Response, css: str = "a") -> list[str]:
    """How ``base_url`` and ``follow_all(css=css)`` differ from the selector's view of
    ``response``: one line per difference, ``[]`` when they agree."""
    problems = []
    expected_base = selector_base_url(response)
    if response.base_url != expected_base:
        problems.append(
            f"{response.url}: base_url {response.base_url!r}, the tree says {expected_base!r}"
        )
    got = [r.url for r in response.follow_all(css=css)]
    want = selector_links(response, css)
    if got != want:
        extra = [u for u in got if u not in want]
        missing = [u for u in want if u not in got]
        problems.append(
            f"{response.url}: follow_all(css={css!r}) gave {len(got)} links, the selector "
            f"{len(want)}; only follow_all: {extra[:5]}, only the selector: {missing[:5]}"
            + ("" if extra or missing else " (same links, other order or count)")
        )
    return problems


def assert_links_agree(response: Response, css: str = "a") -> None:
    """Raise ``AssertionError`` naming the differences if ``follow_all``'s fast path and
    ``base_url`` disagree with the selector on ``response``."""
    problems = link_disagreements(response, css)
    assert not problems, "\n".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check follow_all against the selector.")
    parser.add_argument("paths", nargs="+", type=Path, help="files or directories")
    parser.add_argument("--base", required=True, help="URL a file's relative path joins")
    parser.add_argument("--content-type", default="text/html", help="header to serve with")
    parser.add_argument("--glob", default="*.html", help="files to read in a directory")
    parser.add_argument("--css", default="a", help="the follow_all(css=...) to check")
    args = parser.parse_args(argv)
    checked = failed = 0
    for root in args.paths:
        files = sorted(root.rglob(args.glob)) if root.is_dir() else [root]
        for path in files:
            relative = path.relative_to(root).as_posix() if root.is_dir() else path.name
            url = Request(urljoin(args.base, relative)).url
            headers = {"Content-Type": args.content_type}
            response = response_for(url, 200, headers, path.read_bytes(), Request(url))
            problems = link_disagreements(response, args.css)
            checked += 1
            failed += bool(problems)
            for line in problems:
                print(f"{path}: {line}")
    print(f"{checked} pages checked, {failed} disagree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
