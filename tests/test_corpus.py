"""End-to-end crawls of real documentation sets (``tests/corpus.py``): spiderfarm must
reach exactly the pages that an independent crawler (``tests/groundtruth.py``) reaches,
each with its ``<title>``."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from spiderfarm.http import Request, response_for
from tests import corpus
from tests.corpus import (
    CORPUS,
    CorpusError,
    CorpusReport,
    CorpusUnavailable,
    check_sha256,
    fetch,
    iter_pages,
)
from tests.corpus_site import CorpusSite
from tests.farm import read_items, run_cli
from tests.groundtruth import GroundTruth, LinkParser, decode, normalise_space
from tests.linkcheck import link_disagreements
from tests.sites import REPO_ROOT

SPIDERS_DIR = REPO_ROOT / "tests" / "corpus_spiders"
SHOWN = 20  # differences listed in a failure message


def _listing(title: str, paths: set[str] | list[str]) -> str:
    shown = sorted(paths)[:SHOWN]
    more = f"\n  ... and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return f"{title} ({len(paths)}):\n  " + "\n  ".join(shown) + more


def test_ground_truth_finds_the_pinned_pages(
    corpus_site: CorpusSite, corpus_truth: GroundTruth, corpus_report: CorpusReport
) -> None:
    corpus_set = corpus_site.corpus_set
    paths = {urlsplit(url).path for url in corpus_truth.pages}
    shipped = {path for path, _ in iter_pages(corpus_set)}
    # Every page the crawler found is a file the package ships (no listing, no error page).
    assert paths <= shipped, _listing("pages that are no HTML file of the set", paths - shipped)
    untitled = [url for url, title in corpus_truth.pages.items() if not normalise_space(title)]
    assert not untitled, _listing("pages without a <title>", untitled)
    corpus_report.append(
        f"{corpus_set.name:14} {corpus_set.package} {corpus_set.version} "
        f"({corpus_set.generator}): ground truth {len(corpus_truth.pages)} pages of "
        f"{len(shipped)} HTML files, {corpus_truth.fetched} fetches in "
        f"{corpus_truth.duration_s:.2f}s"
    )
    assert len(corpus_truth.pages) == corpus_set.pages


def test_crawl_reaches_exactly_the_ground_truth(
    corpus_site: CorpusSite,
    corpus_truth: GroundTruth,
    corpus_report: CorpusReport,
    tmp_path: Path,
) -> None:
    corpus_set = corpus_site.corpus_set
    out = tmp_path / "pages.jsonl"
    started = time.monotonic()
    result = run_cli(
        ["crawl", "followall", "--spiders-dir", str(SPIDERS_DIR),
         "-a", f"start_urls={corpus_site.start_url}", "--workers", "2",
         "-s", "obey_robots=false", "-o", str(out)]
    )  # fmt: skip
    duration_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    summary = re.search(r"crawl finished: .*", result.stdout)
    items = read_items(out)
    titles = {str(item["url"]): item["title"] for item in items}
    corpus_report.append(
        f"{corpus_set.name:14} spiderfarm --workers 2: {len(titles)} of "
        f"{len(corpus_truth.pages)} pages in {duration_s:.2f}s "
        f"({summary.group(0) if summary else 'no summary'})"
    )

    def rel(urls: set[str]) -> set[str]:
        return {url.removeprefix(corpus_site.base_url.rstrip("/")) for url in urls}

    missing = rel(set(corpus_truth.pages) - set(titles))
    extra = rel(set(titles) - set(corpus_truth.pages))
    assert not missing and not extra, (
        f"{corpus_set.name} ({corpus_set.package} {corpus_set.version}): spiderfarm found "
        f"{len(titles)} pages, the ground truth {len(corpus_truth.pages)}\n"
        f"{_listing('missed', missing)}\n{_listing('extra', extra)}\n{result.stdout}"
    )
    assert len(items) == len(titles), "a page was written twice"
    wrong = [
        f"{url}: {normalise_space(titles[url])!r} != {normalise_space(title)!r}"
        for url, title in corpus_truth.pages.items()
        if normalise_space(titles[url]) != normalise_space(title)
    ]
    assert not wrong, _listing("pages whose title differs from the ground truth's", wrong)
    # The other URLs the pages link to: images and the like fetched, 404s failed.
    failed = sum(1 for what in corpus_truth.other.values() if what.startswith("http_"))
    fetched = len(corpus_truth.pages) + len(corpus_truth.other) - failed
    assert summary is not None, result.stdout
    expected = f"crawl finished: {fetched} pages, {len(titles)} items, {failed} errors in"
    assert summary.group(0).startswith(expected), result.stdout


SCRAPY_STYLE_SETS = [s for s in CORPUS if s.name in ("sphinx", "docbook-xhtml")]


@pytest.mark.parametrize("spider", ["stateful", "asyncstart"])
@pytest.mark.parametrize(
    "corpus_site", SCRAPY_STYLE_SETS, indirect=True, ids=lambda s: s.name
)
def test_scrapy_style_spiders_crawl_real_doc_sets_completely(
    spider: str, corpus_site: CorpusSite, corpus_truth: GroundTruth, tmp_path: Path
) -> None:
    """State set in start_requests() (stateful) or async def start() (asyncstart), read
    in callbacks on two workers, over real XHTML and Sphinx sets: every page, once."""
    out = tmp_path / "pages.jsonl"
    result = run_cli(
        ["crawl", spider, "--spiders-dir", str(SPIDERS_DIR),
         "-a", f"start_url={corpus_site.start_url}", "--workers", "2",
         "-s", "obey_robots=false", "-o", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    items = read_items(out)
    by_url = {str(item["url"]): item for item in items}
    assert len(by_url) == len(items), "a page was written twice"
    assert set(by_url) == set(corpus_truth.pages), result.stdout
    for url, title in corpus_truth.pages.items():
        assert normalise_space(str(by_url[url]["title"])) == normalise_space(title), url
    if spider == "stateful":
        host = urlsplit(corpus_site.start_url).netloc
        assert {item["host"] for item in items} == {host}
    else:
        assert all(item["under_root"] is True for item in items)
        assert by_url[corpus_site.start_url]["via"] is None
        assert all(
            item["via"] in corpus_truth.pages for url, item in by_url.items()
            if url != corpus_site.start_url
        )  # fmt: skip
    assert "AttributeError" not in result.stderr


def test_follow_all_agrees_with_the_selector_on_every_corpus_page() -> None:
    """The link fast path (root-relative shortcut, <base href>) against the parsed tree,
    on every HTML file of every set, served as text/html."""
    checked = 0
    problems: list[str] = []
    for corpus_set in CORPUS:
        try:
            pages = list(iter_pages(corpus_set))
        except CorpusUnavailable as exc:
            pytest.skip(f"corpus set {corpus_set.name!r} is unavailable: {exc}")
        base = "http://127.0.0.1:8000"
        for path, body in pages:
            response = response_for(
                base + path, 200, {"Content-Type": "text/html"}, body, Request(base + path)
            )
            problems += [f"{corpus_set.name} {path}: {p}" for p in link_disagreements(response)]
            checked += 1
    assert not problems, _listing("pages where follow_all and the selector differ", problems)
    assert checked == 126 + 89 + 153 + 400 + 105  # every HTML file the five packages ship


def test_ground_truth_parser_follows_only_a_href() -> None:
    parser = LinkParser()
    parser.feed(
        "<HTML><HEAD><TITLE> Tom &amp;\n Jerry </TITLE><base href='/docs/'>"
        "<base href='/ignored/'><link rel=next href='next.html'></HEAD><BODY>"
        "<A HREF='a.html#top'>a</A><a name='here'></a><a href=''>self</a>"
        "<area href='map.html'><frame src='frame.html'><a href=\"b.html\"/>"
        "<svg><title>not the page title</title></svg></BODY></HTML>"
    )
    parser.close()
    assert parser.hrefs == ["a.html#top", "", "b.html"]
    assert parser.base_href == "/docs/"
    assert normalise_space(parser.title) == "Tom & Jerry"


def test_ground_truth_decodes_as_declared() -> None:
    latin1 = "café".encode("latin-1")
    assert decode(b'<meta charset="iso-8859-1"><p>' + latin1, None).endswith("café")
    assert decode(b'<?xml version="1.0" encoding="iso-8859-1"?><p>' + latin1, None).endswith("café")
    assert decode("café".encode(), "utf-8") == "café"
    assert decode(b"caf\xe9", None) == "caf\ufffd"  # undeclared: UTF-8, replaced


TEXINFO = next(corpus_set for corpus_set in CORPUS if corpus_set.name == "texinfo")  # smallest


def test_a_deb_whose_sha256_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    deb = tmp_path / "m4-doc_1.4.19-3_all.deb"
    deb.write_bytes(b"not the pinned package")
    digest = hashlib.sha256(b"not the pinned package").hexdigest()
    with pytest.raises(CorpusError, match=f"has sha256 {digest}, but CORPUS pins {TEXINFO.sha256}"):
        check_sha256(deb, TEXINFO)
    check_sha256(deb, dataclasses.replace(TEXINFO, sha256=digest))  # the right pin: no error


def test_fetch_says_which_set_is_unavailable_when_the_registry_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get on this machine")
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        apt_conf = tmp_path / "apt.conf"
        apt_conf.write_text(
            f'Acquire::http::Proxy "{proxy}";\nAcquire::https::Proxy "{proxy}";\n'
            'Acquire::Retries "0";\n'
        )
        monkeypatch.setenv("APT_CONFIG", str(apt_conf))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        # A failed apt-get update here must not be remembered for the real fetches.
        monkeypatch.setattr(corpus, "_update_problems", None)
        with pytest.raises(CorpusUnavailable, match=r"unreachable.*m4-doc=1\.4\.19-3"):
            fetch(TEXINFO)


def test_unpacking_decompresses_html_gz_and_drops_links_that_leave_the_package(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "doc").mkdir(parents=True)
    (tree / "doc" / "changes.html.gz").write_bytes(gzip.compress(b"<title>Changes</title>"))
    (tree / "doc" / "index.html").write_text("<title>Index</title>")
    (tree / "doc" / "home.html").symlink_to("index.html")  # inside: kept
    (tree / "doc" / "jquery.js").symlink_to("../../javascript/jquery.js")  # dangling
    (tree / "doc" / "passwd").symlink_to("/etc/passwd")  # outside the package
    corpus._normalise(tree)
    assert sorted(p.name for p in (tree / "doc").iterdir()) == [
        "changes.html", "home.html", "index.html",
    ]  # fmt: skip
    assert (tree / "doc" / "changes.html").read_bytes() == b"<title>Changes</title>"
