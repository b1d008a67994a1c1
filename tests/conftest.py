"""Shared fixtures: the repo paths, the in-process test site, the static quotes site, the
real-world corpus sites and their ground truth, small real disks (tmpfs)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests import groundtruth
from tests.corpus import CORPUS, CorpusReport, CorpusSet, CorpusUnavailable, fetch
from tests.corpus_site import CorpusSite
from tests.sites import (
    SiteServer,
    make_test_app,
    run_subprocess_site,
    stop_subprocess,
    subprocess_environ,
)
from tests.tmpfs import Tmpfs


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout holding ``spiderfarm/`` and ``tests/``."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_dir(repo_root: Path) -> Path:
    """The ``shared/`` directory beside the checkout (test sites, ground truth)."""
    return repo_root.parent / "shared"


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """``os.environ`` copy in which a child imports ``spiderfarm`` and ``tests.sites``
    from this checkout and writes unbuffered output."""
    return subprocess_environ()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, int], Tmpfs]]:
    """``tmpfs(name, size_kib)``: a real tmpfs of that size at ``tmp_path / name``, a disk
    that fills up (skips, saying why, only where one cannot be mounted); unmounted after."""
    made: list[Tmpfs] = []

    def mount(name: str, size_kib: int) -> Tmpfs:
        made.append(Tmpfs(tmp_path / name, size_kib))
        return made[-1]

    yield mount
    for disk in made:
        disk.unmount()


@pytest.fixture
async def test_site() -> AsyncIterator[SiteServer]:
    """A fresh ``make_test_app()`` on ``127.0.0.1:0``; read hits from ``test_site.app``."""
    async with SiteServer(make_test_app()) as server:
        yield server


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """``tests/sites.py`` in its own process (the farm's workers are processes too):
    base URL ``http://127.0.0.1:PORT/``."""
    proc, base_url = run_subprocess_site([sys.executable, "-m", "tests.sites", "--port", "0"])
    try:
        yield base_url
    finally:
        stop_subprocess(proc)


@pytest.fixture(scope="session")
def quotes_site(shared_dir: Path) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/``) of ``python -m http.server`` serving the
    static quotes site from ``shared/sites/quotes``."""
    root = shared_dir / "sites" / "quotes"
    if not (root / "index.html").is_file():
        pytest.fail(f"the quotes test site is missing: expected {root / 'index.html'}")
    argv = [
        sys.executable,
        "-u",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(root),
    ]
    proc, base_url = run_subprocess_site(argv)
    try:
        yield base_url
    finally:
        stop_subprocess(proc)


@pytest.fixture(scope="session", params=CORPUS, ids=lambda corpus_set: corpus_set.name)
def corpus_site(request: pytest.FixtureRequest) -> Iterator[CorpusSite]:
    """Each corpus set in turn (fetched on first use, see ``tests/corpus.py``), served on
    127.0.0.1:0. Skips only if Debian's package registry cannot be reached."""
    corpus_set: CorpusSet = request.param
    try:
        root = fetch(corpus_set)
    except CorpusUnavailable as exc:
        pytest.skip(f"corpus set {corpus_set.name!r} ({corpus_set.package}) is unavailable: {exc}")
    argv = [sys.executable, "-u", "-m", "tests.corpus_site", str(root), "--port", "0"]
    proc, base_url = run_subprocess_site(argv)
    try:
        yield CorpusSite(corpus_set, root, base_url)
    finally:
        stop_subprocess(proc)


@pytest.fixture(scope="session")
def corpus_truth(corpus_site: CorpusSite) -> groundtruth.GroundTruth:
    """The independent stdlib crawler's view of ``corpus_site``, crawled once a session."""
    return groundtruth.crawl(corpus_site.start_url)


@pytest.fixture
def corpus_report(request: pytest.FixtureRequest) -> CorpusReport:
    """Lines the corpus tests append (pages and times per set), printed at the end."""
    return CorpusReport(request.node)


_CORPUS_REPORT: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _CORPUS_REPORT.extend(value for name, value in report.user_properties if name == "corpus")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CORPUS_REPORT:
        terminalreporter.section("real-world corpus")
        # Each set's ground truth first, then the crawl (xdist runs them in any order).
        lines = sorted(_CORPUS_REPORT, key=lambda line: (line.split()[0], "spiderfarm" in line))
        for line in lines:
            terminalreporter.write_line(line)
