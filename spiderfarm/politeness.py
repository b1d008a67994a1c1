"""Farm-wide politeness rules the frontier applies: per-host delays and robots.txt.

Pure logic, no locks and no sockets: the frontier calls these under its own lock, so one
decision covers every worker of the farm.

* **Throttle** — each host has a delay between request starts: at least ``delay_s`` and
  the site's ``Crawl-delay``; with ``autothrottle`` it follows Scrapy's AutoThrottle
  (``latency / target concurrency``, averaged), is raised sharply on 429/503, and backs
  off a host whose connections keep failing. ``Retry-After`` holds the host that long.
* **Robots** — robots.txt is fetched once per origin (scheme, host, port) by leasing a
  request to a worker like any other; requests for that origin wait until it is known.
  RFC 9309: 4xx allows all; 5xx or unreachable allows nothing while it lasts (the fetch
  is retried); at most 500 KiB is parsed. ``Robots.admit`` says what to do with each
  request (an ``Admission``) and ``Robots.settle`` what a fetch of robots.txt released;
  the frontier does the queueing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from protego import Protego

from .protocol import CONNECTION_FAILURES, WireRequest

__all__ = [
    "CONNECTION_FAILURES",
    "ROBOTS_CALLBACK",
    "ROBOTS_MAX_BYTES",
    "Admission",
    "Held",
    "Origin",
    "OriginState",
    "Robots",
    "Settled",
    "Throttle",
    "origin_of",
    "robots_wire",
]

ROBOTS_CALLBACK = "__robots__"
ROBOTS_MAX_BYTES = 500 * 1024
_BACKOFF_AFTER_FAILURES = 3


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL, lower-cased (string slicing: this runs
    for every request the frontier admits)."""
    start, end = url.find("//") + 2, len(url)
    for mark in "/?#":
        at = url.find(mark, start, end)
        if at != -1:
            end = at
    return url[:end].lower()


def robots_wire(origin: str) -> WireRequest:
    """The request that fetches ``origin``'s robots.txt (never deduplicated)."""
    return (origin + "/robots.txt", ROBOTS_CALLBACK, "GET", None, None, None, 0, True, None, 0,
            None)  # fmt: skip


class Throttle:
    """Computes each host's delay from the settings and what the acks report."""

    def __init__(self, settings: Any) -> None:
        self.min_delay = settings.delay_s
        self.randomize = settings.randomize_delay
        self.adaptive = settings.autothrottle
        self.target = settings.autothrottle_target_concurrency
        self.max_delay = max(settings.autothrottle_max_delay_s, self.min_delay)

    def gap(self, delay: float) -> float:
        """The wait before the host's next request start (randomised 0.5-1.5x if set)."""
        if delay and self.randomize:
            return delay * random.uniform(0.5, 1.5)
        return delay

    def update(
        self, delay: float, floor: float, status: int, latency: float, failed: bool,
        failures: int,
    ) -> float:  # fmt: skip
        """The host's new delay after one response (or connection failure).

        Without ``autothrottle`` the delay is the floor again after any ordinary answer;
        429/503 and repeated connection failures still back the host off meanwhile.
        """
        floor = max(floor, self.min_delay)
        if not self.adaptive and status not in (429, 503) and not failed:
            return floor  # the common case without autothrottle: nothing to compute
        if self.adaptive:
            new = delay
            if status and latency > 0:
                new = (delay + latency / self.target) / 2
                if status != 200 and new < delay:
                    new = delay  # errors never speed a host up (AutoThrottle's rule)
        else:
            new = floor if status else delay
        if status in (429, 503):
            new = max(delay * 2, 1.0)  # the server says slow down: do so sharply
        if failed and failures >= _BACKOFF_AFTER_FAILURES:
            new = max(delay * 2, 1.0)
        # The floor (delay_s, Crawl-delay) wins even over the throttle's ceiling.
        return float(max(min(new, self.max_delay), floor))


#: What robots.txt is known of an origin: ``pending`` (being fetched), ``ready`` (loaded,
#: or missing: everything allowed), ``unavailable`` (5xx or unreachable: nothing allowed,
#: the fetch is retried) or ``failed`` (out of retries: nothing allowed for good).
OriginState = Literal["pending", "ready", "unavailable", "failed"]
#: What the frontier does with a request, by robots.txt: ``queue`` it; ``hold`` it (until
#: its origin's robots.txt is known); ``fetch_robots`` (hold it, and queue the fetch of its
#: origin's robots.txt, met for the first time); drop it as disallowed (``drop_robots``) or
#: because robots.txt never answered (``drop_unavailable``).
Admission = Literal["queue", "hold", "fetch_robots", "drop_robots", "drop_unavailable"]
#: A request waiting for its origin's robots.txt: (request id, politeness key, wire, attempt).
Held = tuple[int, str, WireRequest, int]


@dataclass(slots=True)
class Origin:
    """robots.txt state of one origin, and the requests that wait for it."""

    state: OriginState = "pending"
    parser: Protego | None = None
    held: list[Held] = field(default_factory=list)
    attempts: int = 0

    def allows(self, url: str, user_agent: str) -> bool:
        return self.parser is None or bool(self.parser.can_fetch(url, user_agent))

    def load(self, text: str) -> None:
        self.parser = Protego.parse(text[:ROBOTS_MAX_BYTES])
        self.state = "ready"

    def crawl_delay(self, user_agent: str) -> float:
        if self.parser is None:
            return 0.0
        delay = self.parser.crawl_delay(user_agent)
        # NaN or a negative value asks for nothing; an infinity is capped by the caller.
        return float(delay) if delay and delay > 0 else 0.0


class Settled(NamedTuple):
    """What one fetch of an origin's robots.txt settled (``Robots.settle``)."""

    retry: int  # fetch it again as this attempt (0: settled; nothing is released)
    crawl_delay_s: float | None  # the Crawl-delay it asks for, when it was loaded
    released: list[Held]  # the requests that waited for it, to admit again


class Robots:
    """robots.txt of every origin the crawl met, and the requests that wait for one.

    Decisions only: the frontier queues, drops and retries what these say.
    """

    __slots__ = ("_max_retries", "_origins", "_user_agent")

    def __init__(self, user_agent: str, max_retries: int) -> None:
        self._user_agent = user_agent
        self._max_retries = max_retries
        self._origins: dict[str, Origin] = {}

    def admit(self, url: str) -> Admission:
        """What to do with a request for ``url`` (see ``Admission``); a request told to
        ``hold`` or ``fetch_robots`` is the caller's to ``hold``."""
        origin = origin_of(url)
        state = self._origins.get(origin)
        if state is None:
            self._origins[origin] = Origin()
            return "fetch_robots"
        if state.state in ("pending", "unavailable"):
            return "hold"
        if state.state == "failed":
            return "drop_unavailable"
        return "queue" if state.allows(url, self._user_agent) else "drop_robots"

    def states(self) -> dict[str, str]:
        """The robots.txt state of every origin met, by its ``host:port`` (``ready``,
        ``pending``, ``unavailable``: being retried, ``failed``: nothing fetched)."""
        return {origin.partition("://")[2]: o.state for origin, o in self._origins.items()}

    def hold(self, url: str, request: Held) -> None:
        """Keep ``request`` until ``settle`` releases its origin's robots.txt."""
        self._origins[origin_of(url)].held.append(request)

    def settle(self, robots_url: str, reason: str, text: str) -> Settled:
        """One fetch of robots.txt ended: ``ok`` (``text`` is the file), ``missing``
        (4xx: all allowed) or anything else (not available: retried while
        ``max_retries`` lasts, then nothing of the origin is fetched)."""
        origin = self._origins[origin_of(robots_url)]
        crawl_delay = None
        if reason == "ok":
            origin.load(text)
            crawl_delay = origin.crawl_delay(self._user_agent)
        elif reason == "missing":
            origin.state = "ready"
        else:
            origin.attempts += 1
            if origin.attempts <= self._max_retries:
                origin.state = "unavailable"  # nothing from this origin until it answers
                return Settled(origin.attempts, None, [])
            origin.state = "failed"
        held, origin.held = origin.held, []
        return Settled(0, crawl_delay, held)
