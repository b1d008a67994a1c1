"""A corpus of real HTML nobody here wrote: documentation sets from Debian's packages.

Each ``CorpusSet`` pins one ``.deb`` by version and sha256. ``fetch(corpus_set)``
downloads it with ``apt-get download PKG=VERSION`` (after one ``apt-get update`` if
the index does not know that version), checks its sha256, unpacks it with ``dpkg -x``
into ``$XDG_CACHE_HOME/spiderfarm-corpus/PKG_VERSION/`` (default ``~/.cache/...``) and
returns the documentation's root there; a later call reuses the verified unpacked tree
without any download. Unpacking normalises two things so a plain web server can serve
the set: ``*.html.gz`` files are decompressed to ``*.html``, and symbolic links that
point outside the package or at nothing (Sphinx's ``_static/*.js`` links into
``libjs-*`` packages) are removed, so they answer 404 whatever the machine has installed.

``iter_pages(corpus_set)`` yields every HTML file of a set from disk, for per-page checks.
Refresh the cache with ``python -m tests.corpus --refresh`` (or delete the directory).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    import pytest

__all__ = [
    "CORPUS",
    "CorpusError",
    "CorpusReport",
    "CorpusSet",
    "CorpusUnavailable",
    "cache_dir",
    "check_sha256",
    "fetch",
    "iter_pages",
]


@dataclass(frozen=True, slots=True)
class CorpusSet:
    """One documentation set: a pinned Debian package and where its HTML lives in it."""

    name: str
    package: str
    version: str
    sha256: str  # of the .deb, as Debian's index lists it
    doc_root: str  # the directory served as the site's root, inside the package
    start_page: str  # relative to doc_root
    generator: str
    pages: int  # text/html pages reachable from start_page (the ground truth's count)

    @property
    def key(self) -> str:
        """The cache directory's name: package and version (an epoch's ``:`` as ``_``)."""
        return f"{self.package}_{self.version.replace(':', '_')}"


CORPUS: tuple[CorpusSet, ...] = (
    CorpusSet(
        name="sphinx",
        package="python-scrapy-doc",
        version="2.8.0-2",
        sha256="aaa1903b7ebfbcf6c2962682044c9d486c71dc64a7420f10e56cd0bca4b8f5f3",
        doc_root="usr/share/doc/python-scrapy-doc/html",
        start_page="index.html",
        generator="Sphinx, Read the Docs theme",
        pages=121,
    ),
    CorpusSet(
        name="docbook-xhtml",
        package="aptitude-doc-en",
        version="0.8.13-5",
        sha256="ba4864ca26464bbe06acd94dc4a79402eea5d7b2d3da943d6ecce3c752bc9e84",
        doc_root="usr/share/doc/aptitude/html/en",
        start_page="index.html",
        generator="DocBook XSL, XHTML 1.0 with an <?xml?> prolog",
        pages=89,
    ),
    CorpusSet(
        name="doxygen",
        package="libsigc++-3.0-doc",
        version="3.4.0-1",
        sha256="1bbb33308b7e2c0627f925e0fe3789c90da9895b99839719800ec5315680ca01",
        doc_root="usr/share/doc/libsigc++-3.0-doc/reference/html",
        start_page="index.html",
        generator="Doxygen 1.9.4",
        pages=116,
    ),
    CorpusSet(
        # The link-dense one (benchmarks may use it): ~400 pages, ~50 links a page.
        name="javadoc",
        package="libcommons-io-java-doc",
        version="2.11.0-2",
        sha256="4fa23ab7ed83a7740127fb485b42ac24e368dd02e9f51b1e66310d4decb03c48",
        doc_root="usr/share/doc/libcommons-io-java/api",
        start_page="index.html",
        generator="javadoc, HTML5 (no frames)",
        pages=399,
    ),
    CorpusSet(
        name="texinfo",
        package="m4-doc",
        version="1.4.19-3",
        sha256="cd9ff967210951a6bda33296c9ce87bcaec7b741eb07716537937102bc4172f2",
        doc_root="usr/share/doc/m4",
        start_page="index.html",
        generator="GNU Texinfo 6.8, makeinfo --html",
        pages=105,
    ),
)


class CorpusError(Exception):
    """A corpus set could not be made ready for a reason a test run must not hide:
    a sha256 mismatch, a version the updated index does not have, a broken package."""


class CorpusUnavailable(CorpusError):
    """Debian's package registry cannot be reached (or this machine has no apt-get):
    the tests that need the set skip, naming it and the error."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/spiderfarm-corpus``, by default ``~/.cache/spiderfarm-corpus``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spiderfarm-corpus"


_MARKER = ".spiderfarm-corpus-ok"  # holds the sha256 of the .deb the tree came from
_update_lock = threading.Lock()
_update_problems: str | None = None  # apt-get update runs at most once per process


def fetch(corpus_set: CorpusSet, *, refresh: bool = False) -> Path:
    """The directory holding ``corpus_set``'s documentation, downloaded and unpacked on
    first use (or again with ``refresh``).

    Raises:
        CorpusUnavailable: the registry cannot be reached, or there is no apt-get.
        CorpusError: the download or unpacking failed otherwise (the message says why).
    """
    dest = cache_dir() / corpus_set.key
    if not refresh and _is_ready(dest, corpus_set):
        return dest / corpus_set.doc_root
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Another test run (another worktree, say) may be fetching the same set right now.
    with _file_lock(dest.parent / f".{corpus_set.key}.lock"):
        if refresh or not _is_ready(dest, corpus_set):
            _install(corpus_set, dest)
    return dest / corpus_set.doc_root


def iter_pages(corpus_set: CorpusSet) -> Iterator[tuple[str, bytes]]:
    """``(url_path, body)`` of every HTML file in the set, in path order; ``url_path`` is
    the path the corpus site serves it at (``/org/apache/Foo.html``), percent-encoded."""
    root = fetch(corpus_set)
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in (".html", ".htm") and path.is_file() and not path.is_symlink():
            yield "/" + quote(path.relative_to(root).as_posix()), path.read_bytes()


def _is_ready(dest: Path, corpus_set: CorpusSet) -> bool:
    marker = dest / _MARKER
    try:
        ok = marker.read_text().strip() == corpus_set.sha256
    except OSError:
        return False
    return ok and (dest / corpus_set.doc_root / corpus_set.start_page).is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _install(corpus_set: CorpusSet, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f".{corpus_set.key}-", dir=dest.parent) as tmp:
        deb = _download(corpus_set, Path(tmp))
        tree = Path(tmp) / "tree"
        _run(["dpkg", "-x", str(deb), str(tree)], corpus_set, "dpkg -x")
        _normalise(tree)
        if not (tree / corpus_set.doc_root / corpus_set.start_page).is_file():
            raise CorpusError(
                f"{corpus_set.package} {corpus_set.version} has no "
                f"{corpus_set.doc_root}/{corpus_set.start_page}: fix its CORPUS entry"
            )
        (tree / _MARKER).write_text(corpus_set.sha256 + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tree.rename(dest)


def _download(corpus_set: CorpusSet, workdir: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise CorpusUnavailable(
            f"corpus set {corpus_set.name!r} needs Debian's package {corpus_set.package}="
            f"{corpus_set.version}, but this machine has no apt-get"
        )
    argv = ["apt-get", "download", "-q", f"{corpus_set.package}={corpus_set.version}"]
    result = _apt(argv, workdir)
    update_error = ""
    if result.returncode != 0 and not _unreachable(result.stderr):
        # Most likely an index that is missing or older than the pinned version.
        update_error = _apt_update()
        result = _apt(argv, workdir)
    if result.returncode != 0:
        problem = (
            f"apt-get download {corpus_set.package}={corpus_set.version} failed "
            f"(corpus set {corpus_set.name!r}): {_last_lines(result.stderr)}"
        )
        if update_error:
            problem += f"; apt-get update said: {update_error}"
        if _unreachable(result.stderr + update_error):
            raise CorpusUnavailable(f"Debian's package registry is unreachable: {problem}")
        raise CorpusError(problem)
    debs = sorted(workdir.glob(f"{corpus_set.package}_*.deb"))
    if len(debs) != 1:
        raise CorpusError(f"apt-get download left {debs!r} in {workdir}, not one .deb")
    check_sha256(debs[0], corpus_set)
    return debs[0]


def check_sha256(deb: Path, corpus_set: CorpusSet) -> None:
    """Raises ``CorpusError`` unless ``deb`` has the sha256 that ``corpus_set`` pins."""
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    if digest != corpus_set.sha256:
        raise CorpusError(
            f"{deb.name} has sha256 {digest}, but CORPUS pins {corpus_set.sha256} for "
            f"{corpus_set.package} {corpus_set.version}: the archive changed; check it and "
            "re-pin the set in tests/corpus.py"
        )


def _apt(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired as exc:
        stderr = f"E: {' '.join(argv)}: Connection timed out (debian archive, {exc.timeout} s)"
        return subprocess.CompletedProcess(argv, 1, "", stderr)


def _apt_update() -> str:
    """Run ``apt-get update`` once per process; ``""`` if it went well, else its errors
    (it exits 0 when it could not fetch an index and keeps the old one)."""
    global _update_problems
    with _update_lock:
        if _update_problems is None:
            result = _apt(["apt-get", "update", "-q"], Path.cwd())
            problems = [
                line.strip()
                for line in result.stderr.splitlines()
                if line.startswith(("E:", "W: Failed to fetch"))
            ]
            if result.returncode != 0 and not problems:
                problems.append(f"exit code {result.returncode}")
            _update_problems = " | ".join(problems[-4:])
        return _update_problems


_UNREACHABLE = (
    "Could not resolve",
    "Temporary failure resolving",
    "Could not connect",
    "Connection failed",
    "Connection timed out",
    "Network is unreachable",
    "No route to host",
    "Unable to connect",
)


def _unreachable(stderr: str) -> bool:
    """Whether apt said it could not reach a Debian archive (another source that is down
    must not turn a real failure into a skip)."""
    return any(
        "debian" in line.lower() and any(marker in line for marker in _UNREACHABLE)
        for line in stderr.replace(" | ", "\n").splitlines()
    )


def _last_lines(text: str, n: int = 4) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def _run(argv: list[str], corpus_set: CorpusSet, what: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except FileNotFoundError:
        raise CorpusError(f"{what} for {corpus_set.package}: {argv[0]} is not installed") from None
    if result.returncode != 0:
        raise CorpusError(f"{what} for {corpus_set.package} failed: {_last_lines(result.stderr)}")


def _normalise(tree: Path) -> None:
    """Make an unpacked package servable as it stands: see the module docstring."""
    top = tree.resolve()
    for path in sorted(tree.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            if not target.exists() or not target.is_relative_to(top):
                path.unlink()
        elif path.name.lower().endswith((".html.gz", ".htm.gz")) and path.is_file():
            plain = path.with_suffix("")
            if not plain.exists():
                plain.write_bytes(gzip.decompress(path.read_bytes()))
                path.unlink()


class CorpusReport:
    """Where a corpus test puts a line (pages and times per set) for the end of the run:
    on its test's report, which pytest-xdist carries from its worker process."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def append(self, line: str) -> None:
        self._node.user_properties.append(("corpus", line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.corpus",
        description="Download and unpack the corpus sets (or check they are cached).",
    )
    parser.add_argument("--refresh", action="store_true", help="download and unpack again")
    args = parser.parse_args(argv)
    for corpus_set in CORPUS:
        root = fetch(corpus_set, refresh=args.refresh)
        count = sum(1 for _ in iter_pages(corpus_set))
        print(f"{corpus_set.name}: {corpus_set.package} {corpus_set.version}, {count} HTML files")
        print(f"  {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
