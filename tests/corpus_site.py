"""A plain static web server for a corpus set, and ``CorpusSite``, the handle tests get
for one that runs. The server is the standard library's ``http.server``
(``.html`` as ``text/html``, ``index.html`` for a directory, a 301 to add a directory's
missing slash) with keep-alive, without directory listings (a directory with no
``index.html`` is a 404, so no page exists that the documentation did not ship).

    python -m tests.corpus_site DIRECTORY --port 0

prints ``serving http://127.0.0.1:PORT/`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.corpus import CorpusSet

__all__ = ["CorpusSite", "main"]


@dataclass(frozen=True, slots=True)
class CorpusSite:
    """A corpus set served by ``python -m tests.corpus_site`` in its own process."""

    corpus_set: CorpusSet
    root: Path  # the directory served
    base_url: str  # http://127.0.0.1:PORT/

    @property
    def start_url(self) -> str:
        return self.base_url + self.corpus_set.start_page


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length

    def list_directory(self, path: Any) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "No directory listings here")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # hundreds of requests a second; the crawlers report what matters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus_site", description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    handler = functools.partial(_Handler, directory=args.directory)
    with ThreadingHTTPServer((args.host, args.port), handler) as server:
        print(f"serving http://{args.host}:{server.server_address[1]}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
