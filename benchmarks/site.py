"""Serve the synthetic product catalogue on 127.0.0.1 for benchmarks, in a process of its own.

nginx is used when it is installed, because a benchmark should measure the crawler, not
the site: one nginx worker serves static files several times faster than any Python
server. Install it with::

    sudo apt-get update && sudo apt-get install -y nginx     # Debian / Ubuntu
    brew install nginx                                       # macOS

Without nginx, ``python -m spiderfarm.demosite`` (aiohttp + uvloop) serves the pages;
that works everywhere but takes a bigger share of the CPU the crawler also needs.

Run it alone (Ctrl-C stops it)::

    python benchmarks/site.py --pages 20000            # prints: serving http://127.0.0.1:PORT/ ...

or use ``ServedSite`` as a context manager, as ``run.py`` does.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from spiderfarm.demosite import Catalogue

__all__ = ["DEFAULT_CATALOGUE", "ServedSite", "find_nginx", "free_port"]

#: The issue's reference site: 20,000 pages of about 12 KB with 20 related links each.
DEFAULT_CATALOGUE = Catalogue(pages=20_000, links_per_page=20, page_bytes=12_000, seed=1)

_NGINX_CONF = """\
{user}daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/client_body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    types {{
        text/html html htm;
        text/css css;
        text/plain txt;
        application/javascript js;
        application/json json;
        application/xml xml;
        image/png png;
        image/gif gif;
        image/jpeg jpg jpeg;
        image/svg+xml svg;
        application/zip zip;
        application/gzip gz;
    }}
    default_type text/html;
    charset utf-8;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root}/site;
        index index.html;
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary, or None. /usr/sbin is checked too: it is off many users' PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A port that was free a moment ago (nginx cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _user_directive() -> str:
    # As root, nginx drops its worker to "nobody", which cannot read our 0700 temp dir.
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


class ServedSite:
    """The catalogue served on 127.0.0.1 by nginx (if found) or the aiohttp demo site.

    ``server`` is ``"auto"`` (nginx when installed), ``"nginx"`` or ``"python"``.
    """

    def __init__(
        self,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        server: str = "auto",
        directory: Path | None = None,
    ) -> None:
        """``directory``: serve that tree of static files instead of the catalogue."""
        self.directory = directory
        if server not in ("auto", "nginx", "python"):
            raise ValueError(f"server must be auto, nginx or python, got {server!r}")
        self.catalogue = catalogue
        self.nginx = find_nginx() if server in ("auto", "nginx") else None
        if server == "nginx" and self.nginx is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
        self.kind = "nginx" if self.nginx else "python"
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT/``)."""
        if self.nginx:
            self._start_nginx(self.nginx)
        else:
            self._start_python()
        return self.url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # nginx: SIGQUIT is a graceful stop, SIGTERM a fast one; both are fine here.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ServedSite:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def expected_urls(self) -> set[str]:
        """Every URL a complete crawl of the site fetches."""
        base = self.url.rstrip("/")
        return {base + path for path in self.catalogue.paths()}

    # -- nginx ---------------------------------------------------------------------
    def _start_nginx(self, binary: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="spiderfarm-bench-site-")
        root = Path(self._tmp.name)
        if self.directory is not None:
            (root / "site").symlink_to(self.directory.resolve(), target_is_directory=True)
        else:
            self.catalogue.write_static(root / "site")
        (root / "tmp").mkdir()
        conf = root / "nginx.conf"
        last_error = ""
        # The port is free when we look and taken by nginx a moment later: retry the race.
        for _ in range(5):
            port = free_port()
            conf.write_text(_NGINX_CONF.format(user=_user_directive(), root=root, port=port))
            argv = [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            self.url = f"http://127.0.0.1:{port}/"
            if self._wait_ready(self.proc, 10.0):
                return
            last_error = self._reap_failed()
        self.stop()
        raise RuntimeError(f"nginx did not start: {last_error or 'no error output'}")

    def _reap_failed(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
        return err.decode(errors="replace").strip()

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    # -- aiohttp demo site ---------------------------------------------------------
    def _start_python(self) -> None:
        c = self.catalogue
        if self.directory is not None:  # the corpus server the tests use
            argv = [sys.executable, "-m", "tests.corpus_site", str(self.directory), "--port", "0"]
            root = Path(__file__).resolve().parent.parent
            self.proc = subprocess.Popen(argv, cwd=root, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE)  # fmt: skip
            assert self.proc.stdout is not None
            self.url = self.proc.stdout.readline().decode().split()[1]
            return
        argv = [
            sys.executable, "-m", "spiderfarm.demosite", "--port", "0",
            "--pages", str(c.pages), "--links-per-page", str(c.links_per_page),
            "--page-bytes", str(c.page_bytes), "--seed", str(c.seed),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # "serving http://127.0.0.1:PORT/ (N pages)"
        if not line.startswith("serving "):
            self.stop()
            raise RuntimeError(f"the demo site failed to start: {line.strip() or 'no output'}")
        self.url = line.split()[1]
        if not self._wait_ready(self.proc, 30.0):
            self.stop()
            raise RuntimeError("the demo site did not answer on /")


def main(argv: list[str] | None = None) -> int:
    d = DEFAULT_CATALOGUE
    parser = argparse.ArgumentParser(description="Serve the benchmark catalogue on 127.0.0.1.")
    parser.add_argument("--pages", type=int, default=d.pages)
    parser.add_argument("--links-per-page", type=int, default=d.links_per_page)
    parser.add_argument("--page-bytes", type=int, default=d.page_bytes)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    args = parser.parse_args(argv)
    catalogue = Catalogue(args.pages, args.links_per_page, args.page_bytes, args.seed)
    site = ServedSite(catalogue, args.server)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with site:
        print(f"serving {site.url} ({catalogue.pages} pages, {site.kind})", flush=True)
        while not stop and site.proc is not None and site.proc.poll() is None:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
