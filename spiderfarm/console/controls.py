"""What the console's actions call: kept apart from ``web`` so that naming it loads no
aiohttp (crawl starts its workers before the console's web app is imported)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Controls"]


class Controls:
    """What the console's actions call (all thread-safe; each may take the frontier's lock)."""

    def __init__(
        self,
        pause: Callable[[str | None], None],
        resume: Callable[[str | None], None],
        stop: Callable[[], None],
        submit: Callable[[list[Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.pause, self.resume, self.stop, self.submit = pause, resume, stop, submit
