"""The farm console: a live web page, ``/metrics`` for Prometheus, and the actions
(pause, resume, stop, push URLs), served by the server process.

``snapshots.py`` takes the frontier's snapshots at a bounded rate in a thread of its
own; ``web.py`` serves the latest one from an aiohttp app on an event loop in another;
``metrics.py`` writes ``/metrics``; ``static/`` holds the page (no CDN, no build step).
Only the server's cli imports this package: the frontier never imports aiohttp. Importing
the package loads neither the web app nor the monitor: ``Console`` does, when built.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..security import is_loopback, parse_address
from .controls import Controls

__all__ = ["Console", "Controls", "console_token", "load_console_token", "parse_console_address"]

#: The label the console's token is derived under: an HMAC of it keyed by the authkey
#: proves knowledge of the key without revealing it (the token cannot reach pickle).
_TOKEN_LABEL = b"spiderfarm console token v1"
MIN_TOKEN_CHARS = 32


def console_token(authkey: bytes) -> str:
    """The console's token for a farm with ``authkey`` (hex HMAC-SHA256 of a fixed label)."""
    return hmac.new(authkey, _TOKEN_LABEL, hashlib.sha256).hexdigest()


def load_console_token(path: str) -> str:
    """The token in ``--console-token-file``: its first line, at least 32 characters.

    Raises:
        SettingsError: unreadable, readable by other users, or too short.
    """
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(
            f"cannot read console token file {path!r}: {exc.strerror}; give a readable file "
            "holding one line of at least 32 random characters"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"console token file {path!r} is readable by other users (mode "
            f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_CHARS or len(set(token)) < 10:
        raise SettingsError(
            f"console token file {path!r} holds {len(token)} characters; a token needs at "
            f"least {MIN_TOKEN_CHARS} random ones: python -c 'import secrets; "
            f"print(secrets.token_hex(32))' > {path} && chmod 600 {path}"
        )
    return token


def parse_console_address(text: str) -> tuple[str, int]:
    """``--console HOST:PORT`` -> (host, port).

    Raises:
        SettingsError: naming the flag and the form it takes.
    """
    try:
        host, port = parse_address(text)
    except SettingsError as exc:
        raise SettingsError(
            f"--console {text!r}: {exc}; give HOST:PORT, for example 127.0.0.1:8080 "
            "(port 0 picks a free one), or --no-console"
        ) from None
    if any(c.isspace() for c in host) or not host:
        raise SettingsError(f"--console {text!r}: {host!r} is not a host name or address")
    return host, port


class Console:
    """The monitor thread and the web app, started and stopped together."""

    def __init__(
        self,
        status: Callable[[bool], dict[str, Any]],
        settings: dict[str, Any],
        controls: Controls,
        bind: tuple[str, int],
        token: str | None,
        *,
        serving: bool = False,
        every_s: float = 0.5,
    ) -> None:
        if token is None and not is_loopback(bind[0]):
            raise SettingsError(
                f"the console on {bind[0]} would be open to the network: a non-loopback "
                "bind needs a token (from the authkey, or --console-token-file)"
            )
        from .snapshots import Monitor  # here: aiohttp.web and prometheus_client take ~50 ms
        from .web import ConsoleApp

        self.monitor = Monitor(status, settings, serving=serving, every_s=every_s)
        self.app = ConsoleApp(self.monitor, controls, bind, token)
        self.token_required = token is not None

    def start(self) -> str:
        """Serve; returns the page's URL.

        Raises:
            SettingsError: the address cannot be bound (in use, not this machine's).
        """
        try:
            host, port = self.app.start()
        except OSError as exc:
            where = f"{self.app.bind[0]}:{self.app.bind[1]}"
            raise SettingsError(
                f"cannot serve the console on {where}: {exc.strerror or exc}; choose another "
                "--console HOST:PORT (port 0 picks a free one), or --no-console"
            ) from None
        self.monitor.start()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def stop(self) -> None:
        self.app.stop()
        self.monitor.stop()
