"""Tests for spiderfarm.spider: spider arguments, and loading spiders by name or file."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiderfarm import HtmlResponse, Request, Response, Spider
from spiderfarm.errors import SpiderLoadError
from spiderfarm.spider import load_spider

SPIDER_A = """\
from spiderfarm import Spider


class AlphaSpider(Spider):
    name = "alpha"
    start_urls = ["http://example.com/"]
"""

SPIDER_B = """\
from spiderfarm import Spider


class BetaSpider(Spider):
    name = "beta"
"""


@pytest.fixture(autouse=True)
def _forget_spider_modules() -> Iterator[None]:
    """Loaded spider files register ``spiderfarm_spiders.*`` modules; drop them after."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("spiderfarm_spiders.", "sf_test_")):
            del sys.modules[name]


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(source)
    return path


# --- Spider arguments -----------------------------------------------------------------------


class ArgSpider(Spider):
    name = "args"
    start_url = "http://example.com/"


def test_keyword_arguments_become_attributes() -> None:
    spider = ArgSpider(start_url="http://127.0.0.1:9000/", category="books")
    assert spider.start_url == "http://127.0.0.1:9000/"
    assert spider.category == "books"  # type: ignore[attr-defined]
    assert ArgSpider.start_url == "http://example.com/"
    assert repr(spider) == "<ArgSpider 'args'>"
    assert spider.logger.name == "spiderfarm.spider.args"


@pytest.mark.parametrize("key", ["parse", "start_requests"])
def test_an_argument_may_not_replace_a_method(key: str) -> None:
    with pytest.raises(SpiderLoadError) as info:
        ArgSpider(**{key: "1"})
    assert str(info.value) == (
        f"spider argument {key!r} cannot be set on spider 'args': "
        "it is not a valid name or would replace a method"
    )
    assert callable(ArgSpider.parse)


@pytest.mark.parametrize("key", ["1st", "a-b", ""])
def test_an_argument_must_be_an_identifier(key: str) -> None:
    with pytest.raises(SpiderLoadError, match=r"it is not a valid name or would replace a method"):
        ArgSpider(**{key: "1"})


def test_default_start_requests_follow_start_urls_with_parse() -> None:
    class Two(Spider):
        name = "two"
        start_urls = ("http://example.com/a", "http://example.com/b")

    requests = list(Two().start_requests())
    assert [(r.url, r.callback) for r in requests] == [
        ("http://example.com/a", None),
        ("http://example.com/b", None),
    ]


def test_default_parse_raises_not_implemented_naming_the_spider() -> None:
    url = "http://example.com/"
    response = Response(url, 200, {}, b"", Request(url))
    with pytest.raises(NotImplementedError, match=r"^spider 'args' has no parse\(\) method"):
        ArgSpider().parse(response)


def test_start_urls_given_as_an_argument_is_split_on_commas() -> None:
    # -a start_urls=URL,URL: a list of URLs, never one string iterated by character.
    spider = ArgSpider(start_urls="http://example.com/a,http://example.com/b")
    assert spider.start_urls == ["http://example.com/a", "http://example.com/b"]
    assert [(r.url, r.callback) for r in spider.start_requests()] == [
        ("http://example.com/a", None),
        ("http://example.com/b", None),
    ]
    assert ArgSpider.start_urls == ()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://example.com/", ["http://example.com/"]),
        (
            " http://example.com/a , http://example.com/b ,",
            ["http://example.com/a", "http://example.com/b"],
        ),
        ("", []),
        (",", []),
    ],
    ids=["one", "spaces-and-trailing-comma", "empty", "only-a-comma"],
)
def test_start_urls_argument_entries_are_stripped_and_empties_dropped(
    given: str, expected: list[str]
) -> None:
    assert ArgSpider(start_urls=given).start_urls == expected


def test_allowed_domains_given_as_an_argument_is_split_on_commas() -> None:
    # -a allowed_domains=localhost: a list of one domain, never a set of characters.
    assert ArgSpider(allowed_domains="localhost").allowed_domains == ["localhost"]
    spider = ArgSpider(allowed_domains=" example.com, example.org ,")
    assert spider.allowed_domains == ["example.com", "example.org"]
    assert ArgSpider.allowed_domains == ()


def test_allowed_domains_set_as_a_string_on_the_class_is_one_domain() -> None:
    class OneDomain(Spider):
        name = "one"
        allowed_domains = "example.com"  # type: ignore[assignment]

    assert OneDomain().allowed_domains == ["example.com"]


def test_the_logger_argument_is_refused() -> None:
    with pytest.raises(SpiderLoadError) as info:
        ArgSpider(logger="x")
    assert str(info.value) == (
        "spider argument 'logger' cannot be set on spider 'args': "
        "it is not a valid name or would replace a method"
    )


# --- load_spider by name --------------------------------------------------------------------


def test_load_by_name_from_a_directory(tmp_path: Path) -> None:
    write(tmp_path, "alpha.py", SPIDER_A)
    write(tmp_path, "beta.py", SPIDER_B)
    write(tmp_path, "_helpers.py", "raise RuntimeError('never imported')\n")
    alpha = load_spider("alpha", tmp_path)
    beta = load_spider("beta", str(tmp_path))
    assert (alpha.__name__, alpha.name, list(alpha.start_urls)) == (
        "AlphaSpider",
        "alpha",
        ["http://example.com/"],
    )
    assert (beta.__name__, beta.name) == ("BetaSpider", "beta")
    assert issubclass(alpha, Spider)


def test_unknown_name_lists_the_spiders_found(tmp_path: Path) -> None:
    write(tmp_path, "alpha.py", SPIDER_A)
    write(tmp_path, "beta.py", SPIDER_B)
    with pytest.raises(SpiderLoadError) as info:
        load_spider("gamma", tmp_path)
    assert str(info.value) == (
        f"no spider named 'gamma' in {str(tmp_path)!r} (spiders found: alpha, beta)"
    )


def test_unknown_name_in_an_empty_directory_says_none(tmp_path: Path) -> None:
    with pytest.raises(SpiderLoadError) as info:
        load_spider("gamma", tmp_path)
    assert str(info.value) == f"no spider named 'gamma' in {str(tmp_path)!r} (spiders found: none)"


def test_unknown_name_also_reports_files_that_failed_to_import(tmp_path: Path) -> None:
    write(tmp_path, "alpha.py", SPIDER_A)
    broken = write(tmp_path, "broken.py", "def oops(:\n")
    with pytest.raises(SpiderLoadError) as info:
        load_spider("gamma", tmp_path)
    message = str(info.value)
    assert message.startswith(
        f"no spider named 'gamma' in {str(tmp_path)!r} (spiders found: alpha); "
        f"these spider files failed to import: spider file {broken}, line 1: "
    )


def test_a_broken_neighbour_does_not_stop_loading_by_name(tmp_path: Path) -> None:
    write(tmp_path, "alpha.py", SPIDER_A)
    write(tmp_path, "broken.py", "raise RuntimeError('boom')\n")
    assert load_spider("alpha", tmp_path).name == "alpha"


def test_missing_spiders_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SpiderLoadError) as info:
        load_spider("alpha", missing)
    assert str(info.value) == (
        f"no spider named 'alpha': spiders directory {str(missing)!r} does not exist "
        "(run from your project folder, pass --spiders-dir, or give a path to a .py file)"
    )


def test_two_files_with_the_same_spider_name_are_an_error(tmp_path: Path) -> None:
    a = write(tmp_path, "a.py", SPIDER_A)
    b = write(tmp_path, "b.py", SPIDER_A.replace("AlphaSpider", "OtherAlpha"))
    with pytest.raises(SpiderLoadError) as info:
        load_spider("alpha", tmp_path)
    assert str(info.value) == (
        f"spider name 'alpha' is defined twice: in {a} and in {b}; rename one"
    )


# --- load_spider by path --------------------------------------------------------------------


def test_load_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, "my_spider.py", SPIDER_A)
    spider = load_spider(str(path), tmp_path / "unused")
    assert (spider.__name__, spider.name) == ("AlphaSpider", "alpha")


def test_load_by_path_ignores_spiders_imported_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "lib"
    shared.mkdir()
    write(shared, "sf_test_shared.py", SPIDER_B)
    monkeypatch.syspath_prepend(str(shared))
    path = write(tmp_path, "uses_shared.py", "from sf_test_shared import BetaSpider\n\n" + SPIDER_A)
    assert load_spider(str(path)).name == "alpha"


def test_missing_spider_file(tmp_path: Path) -> None:
    ref = str(tmp_path / "absent.py")
    with pytest.raises(SpiderLoadError) as info:
        load_spider(ref)
    assert str(info.value) == f"spider file {ref!r} does not exist"


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "syntax.py",
        'from spiderfarm import Spider\n\n\nclass Broken(Spider:\n    name = "broken"\n',
    )
    with pytest.raises(SpiderLoadError) as info:
        load_spider(str(path))
    message = str(info.value)
    assert message.startswith(f"spider file {path}, line 4: ")
    assert message.endswith("; fix the syntax error")
    assert "spiderfarm_spiders.syntax" not in sys.modules


def test_exception_at_import_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "boom.py", 'import os\n\nraise RuntimeError("no database")\n')
    with pytest.raises(SpiderLoadError) as info:
        load_spider(str(path))
    assert str(info.value) == (
        f"spider file {path} failed to import: RuntimeError: no database (at {path}, line 3)"
    )
    assert "spiderfarm_spiders.boom" not in sys.modules


def test_file_without_a_spider(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.py", "from spiderfarm import Spider\n\nX = 1\n")
    with pytest.raises(SpiderLoadError) as info:
        load_spider(str(path))
    assert str(info.value) == (
        f"spider file {str(path)!r} defines no subclass of spiderfarm.Spider"
    )


def test_file_with_two_spiders(tmp_path: Path) -> None:
    path = write(tmp_path, "two.py", SPIDER_A + "\n\n" + SPIDER_B.split("\n", 1)[1])
    with pytest.raises(SpiderLoadError) as info:
        load_spider(str(path))
    assert str(info.value) == (
        f"spider file {str(path)!r} defines several spiders (alpha, beta); "
        "run one by name with --spiders-dir"
    )


def test_spider_without_a_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "anon.py",
        "from spiderfarm import Spider\n\n\nclass Anon(Spider):\n    start_urls = []\n",
    )
    with pytest.raises(SpiderLoadError) as info:
        load_spider(str(path))
    assert str(info.value) == f"spider Anon in {path} has no name attribute"


def test_start_urls_given_as_a_string(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "str_urls.py",
        'from spiderfarm import Spider\n\n\nclass S(Spider):\n    name = "s"\n'
        '    start_urls = "http://example.com/"\n',
    )
    with pytest.raises(SpiderLoadError) as info:
        load_spider(str(path))
    assert str(info.value) == ("spider 's': start_urls must be a list of URLs, not a string")


def test_start_urls_given_as_a_string_is_caught_by_name_too(tmp_path: Path) -> None:
    write(
        tmp_path,
        "str_urls.py",
        'from spiderfarm import Spider\n\n\nclass S(Spider):\n    name = "s"\n'
        '    start_urls = "http://example.com/"\n',
    )
    with pytest.raises(SpiderLoadError, match=r"^spider 's': start_urls must be a list"):
        load_spider("s", tmp_path)


def test_an_unnamed_base_class_does_not_make_a_file_ambiguous(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "based.py",
        "from spiderfarm import Spider\n\n\nclass Base(Spider):\n    pass\n\n\n"
        'class Real(Base):\n    name = "real"\n',
    )
    assert load_spider(str(path)).name == "real"


# --- the example spiders in spiders/ --------------------------------------------------------


@pytest.fixture(scope="module")
def spiders_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "spiders"


def test_the_example_spiders_load_by_name(spiders_dir: Path) -> None:
    found = {name: load_spider(name, spiders_dir) for name in ("catalogue", "quotes", "links")}
    assert {name: cls.__name__ for name, cls in found.items()} == {
        "catalogue": "CatalogueSpider",
        "quotes": "QuotesSpider",
        "links": "LinksSpider",
    }
    assert found["catalogue"].custom_settings == {
        "per_host_concurrency": 128,
        "concurrency": 32,
        "autothrottle": False,
    }


def test_the_example_spiders_load_by_path(spiders_dir: Path) -> None:
    assert load_spider(str(spiders_dir / "quotes.py")).name == "quotes"


def test_the_example_spiders_start_where_they_are_told(spiders_dir: Path) -> None:
    for name in ("catalogue", "quotes", "links"):
        spider = load_spider(name, spiders_dir)(start_url="http://127.0.0.1:9000/")
        assert [(r.url, r.callback) for r in spider.start_requests()] == [
            ("http://127.0.0.1:9000/", "parse")
        ]


def test_the_links_spider_needs_a_start_url_and_limits_itself_to_its_host(
    spiders_dir: Path,
) -> None:
    links = load_spider("links", spiders_dir)
    with pytest.raises(SpiderLoadError) as info:
        links()
    assert str(info.value) == "spider 'links' needs a start URL: -a start_url=http://..."
    assert links(start_url="http://127.0.0.1:9000/x").allowed_domains == ["127.0.0.1"]


def test_the_quotes_spider_parses_the_bundled_front_page(spiders_dir: Path) -> None:
    page = spiders_dir.parent.parent / "shared" / "sites" / "quotes" / "index.html"
    if not page.is_file():
        pytest.fail(f"the quotes test site is missing: expected {page}")
    url = "http://127.0.0.1:9000/"
    body = page.read_bytes()
    response = HtmlResponse(url, 200, {"Content-Type": "text/html"}, body, Request(url))
    out = list(load_spider("quotes", spiders_dir)(start_url=url).parse(response))
    items = [o for o in out if isinstance(o, dict)]
    requests = [o for o in out if isinstance(o, Request)]
    assert len(items) == 10
    assert items[0] == {
        "type": "quote",
        "text": "“The world as we have created it is a process of our thinking. "
        "It cannot be changed without changing our thinking.”",
        "author": "Albert Einstein",
        "tags": ["change", "deep-thoughts", "thinking", "world"],
    }
    assert len(requests) == 11
    assert [r.callback for r in requests] == ["parse_author"] * 10 + ["parse"]
    assert requests[0].url == "http://127.0.0.1:9000/author/Albert-Einstein"
    assert requests[-1].url == "http://127.0.0.1:9000/page/2/"
