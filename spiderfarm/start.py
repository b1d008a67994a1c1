"""The spider's start requests as a stream the frontier pulls from, and the spider's
state as the workers receive it.

``start()`` (Scrapy 2.13+, an async generator) is used when the spider defines it, else
``start_requests()``; either may be a plain function returning a list (or ``None``), a
generator, a coroutine or an async generator. Nothing is drained up front: the server
takes one batch before it listens (so a bad first URL stops the crawl at once), then a
feeder thread takes more whenever the frontier's queue runs low, so a spider yielding
ten million URLs from a file starts crawling at once and the server's memory stays flat.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import SpiderfarmError
from .http import InvalidRequest, Request, current_spider
from .items import encode_item, is_item
from .protocol import RUNNING
from .urls import Fingerprinter

if TYPE_CHECKING:
    from .frontier import Frontier
    from .protocol import PushEntry
    from .spider import Spider

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_MAX_BYTES",
    "StartFeeder",
    "StartStream",
    "apply_spider_state",
    "spider_state",
]

#: Requests taken from the start stream at a time.
START_BATCH = 1_000
#: The stream is read while fewer than this many requests are queued.
START_QUEUE_TARGET = 5_000
#: The largest spider attribute (pickled) sent to the workers.
STATE_MAX_BYTES = 1 << 20
#: All of the spider's attributes together, pickled.
STATE_TOTAL_MAX_BYTES = 8 << 20
#: Attributes set by the base class or by the farm, never sent.
_LOCAL_ATTRIBUTES = frozenset({"logger", "_stats"})  # each process counts its own stats


class StartStream:
    """The spider's start output, taken in batches as push entries and item lines."""

    def __init__(self, spider: Spider, key_of: Callable[[str], str]) -> None:
        from .spider import Spider

        self.spider = spider
        self._key_of = key_of
        self._fingerprinter = Fingerprinter()
        self.exhausted = False
        self.taken = 0  # values read so far, for messages
        self._loop: asyncio.AbstractEventLoop | None = None
        overridden = type(spider).start is not Spider.start
        what = "start()" if overridden else "start_requests()"
        self.what = what
        token = current_spider.set(spider)
        try:
            source: Any = spider.start() if overridden else spider.start_requests()
        except Exception as exc:
            raise SpiderfarmError(
                f"spider {spider.name!r}: {what} raised {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            current_spider.reset(token)
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if source is None:
            self.exhausted = True
        elif inspect.isasyncgen(source) or hasattr(source, "__anext__"):
            self._async = source
        elif inspect.isawaitable(source):  # async def start_requests(): return [...]
            self._async = _after(source)
        elif hasattr(source, "__iter__"):
            self._sync = iter(source)
        else:
            raise SpiderfarmError(
                f"spider {spider.name!r}: {what} returned {type(source).__name__}; "
                "yield (or return a list of) Requests and items"
            )

    def take(self, n: int) -> tuple[list[PushEntry], list[str], list[str]]:
        """Up to ``n`` start values: requests as push entries, items as JSON lines, and
        a message for each thing that went wrong. A value that is neither a Request
        nor an item is skipped and the stream goes on; if the spider's start code
        raised (or made a bad Request), the values before it are kept and the stream
        is exhausted (a generator cannot go on after raising).
        """
        values: list[Any] = []
        failure = ""
        token = current_spider.set(self.spider)
        try:
            if self._sync is not None:
                for value in self._sync:
                    values.append(value)
                    if len(values) >= n:
                        break
                else:
                    self.exhausted = True
            elif self._async is not None:
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                done = self._loop.run_until_complete(_take_async(self._async, n, values))
                self.exhausted = done
        except InvalidRequest as exc:
            self.exhausted = True
            failure = f"spider {self.spider.name!r}: bad start request: {exc}"
        except Exception as exc:
            self.exhausted = True
            logger.debug("%s raised", self.what, exc_info=True)
            failure = (
                f"spider {self.spider.name!r}: {self.what} raised {type(exc).__name__}: {exc} "
                f"(after {self.taken + len(values)} start values)"
            )
        finally:
            current_spider.reset(token)
        if self.exhausted:
            self._finish()
        entries, items, errors = self._convert(values)
        if failure:
            errors.append(failure)
        return entries, items, errors

    def ended(self) -> bool:
        return self.exhausted

    def _convert(self, values: list[Any]) -> tuple[list[PushEntry], list[str], list[str]]:
        entries: list[PushEntry] = []
        items: list[str] = []
        errors: list[str] = []
        fingerprint, key_of = self._fingerprinter.fingerprint, self._key_of
        for value in values:
            self.taken += 1
            if isinstance(value, Request):
                entries.append(
                    (fingerprint(value.url, value.method, value.body), key_of(value.url),
                     value.to_wire())
                )  # fmt: skip
            elif is_item(value):
                try:
                    items.append(encode_item(value))
                except (TypeError, ValueError) as exc:
                    errors.append(
                        f"spider {self.spider.name!r}: {self.what} yielded an item that "
                        f"cannot be encoded as JSON: {exc}"
                    )
            else:
                errors.append(
                    f"spider {self.spider.name!r}: {self.what} yielded {value!r:.100}; "
                    "it must yield Request objects or items (dicts)"
                )
        return entries, items, errors

    def _finish(self) -> None:
        self.exhausted = True
        self._sync = None
        if self._async is not None:
            agen, self._async = self._async, None
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self._loop is not None:
                try:
                    self._loop.run_until_complete(aclose())
                except Exception:  # the spider's own clean-up failed: nothing to save
                    logger.debug("closing %s", self.what, exc_info=True)
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def close(self) -> None:
        """Stop reading: the crawl ended before the stream did (runs its ``finally``)."""
        if self._sync is not None and hasattr(self._sync, "close"):
            try:
                self._sync.close()
            except Exception:
                logger.debug("closing %s", self.what, exc_info=True)
        self._finish()


async def _after(awaitable: Any) -> AsyncIterator[Any]:
    result = await awaitable
    for value in result or ():
        yield value


async def _take_async(agen: AsyncIterator[Any], n: int, values: list[Any]) -> bool:
    """Append up to ``n`` values to ``values`` (kept if the generator raises); True if
    it ended."""
    async for value in agen:
        values.append(value)
        if len(values) >= n:
            return False
    return True


class StartFeeder:
    """Reads the start stream into the frontier while its queue runs low, on a thread of
    its own (the spider's start code may block on a file or a database)."""

    def __init__(
        self,
        stream: StartStream,
        frontier: Frontier,
        fill: Callable[[list[PushEntry]], list[PushEntry]] | None = None,
        target: int = START_QUEUE_TARGET,
    ) -> None:
        self.stream, self.frontier, self._fill = stream, frontier, fill
        self.target = target
        self.accepted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pull(self, strict: bool = False) -> int:
        """Read batches until the queue holds ``target`` requests or the stream ends;
        returns how many requests the frontier accepted. A value that is neither a
        Request nor an item is logged and counted (``errors/start_requests``), or with
        ``strict`` (the first batch, before the farm starts) raised.

        Raises:
            SpiderfarmError: as ``StartStream.take``, or a bad value when ``strict``.
        """
        accepted = 0
        stream, frontier = self.stream, self.frontier
        while not stream.exhausted and not self._stop.is_set():
            room = frontier.start_room(self.target)
            if room <= 0:
                break
            entries, items, errors = stream.take(min(room, START_BATCH))
            if errors:
                if strict:
                    stream.close()
                    raise SpiderfarmError(errors[0])
                for message in errors[:3]:
                    logger.error("%s", message)
                frontier.note("errors/start_requests", len(errors))
                if stream.ended():
                    logger.error("the crawl goes on with the start requests it has")
            if self._fill is not None and entries:
                entries = self._fill(entries)
            if entries:
                accepted += frontier.push(entries)
            if items:
                frontier.write_start_items(items)
        self.accepted += accepted
        return accepted

    def start(self) -> None:
        """Go on reading in the background, if there is more to read."""
        if self.stream.exhausted:
            return  # seed() saw it end
        self._thread = threading.Thread(target=self._run, name="start-requests", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        frontier, wanted = self.frontier, self.frontier.start_wanted
        try:
            while not self._stop.is_set() and not self.stream.exhausted:
                wanted.clear()
                if frontier.state != RUNNING:
                    break
                if self.pull() == 0 and not self.stream.exhausted:
                    wanted.wait(1.0)
        except Exception:  # a bug here must not leave the crawl waiting for more forever
            logger.exception("reading the start requests failed")
            frontier.note("errors/start_requests")
        finally:
            self.stream.close()
            frontier.end_start()

    def stop(self) -> None:
        self._stop.set()
        self.frontier.start_wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                logger.warning("the spider's start code did not stop within 10 s")
        else:
            self.stream.close()


# -- the spider's state on every worker ------------------------------------------------
def spider_state(spider: Spider) -> dict[str, bytes]:
    """The spider's instance attributes, pickled one by one, for the workers.

    What travels: every attribute set on the instance (by ``__init__``, ``-a``,
    ``start()`` or ``start_requests()`` before its first batch) that pickles within
    ``STATE_MAX_BYTES``; functions and methods never do. The others are named in one
    warning and keep on each worker the value its own ``__init__`` gave them.
    """
    state: dict[str, bytes] = {}
    left_out: list[str] = []
    total = 0
    for name, value in vars(spider).items():
        if name in _LOCAL_ATTRIBUTES:
            continue
        if inspect.isroutine(value) or inspect.ismodule(value) or inspect.isclass(value):
            left_out.append(f"{name} (a {type(value).__name__})")
            continue
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            left_out.append(f"{name} (does not pickle: {type(exc).__name__})")
            continue
        if len(blob) > STATE_MAX_BYTES or total + len(blob) > STATE_TOTAL_MAX_BYTES:
            left_out.append(f"{name} ({len(blob):,} bytes pickled: too big)")
            continue
        total += len(blob)
        state[name] = blob
    if left_out:
        logger.warning(
            "spider %r: these attributes are not sent to the workers, which keep what their "
            "own __init__ set: %s",
            spider.name,
            ", ".join(left_out),
        )
    return state


def apply_spider_state(spider: Spider, state: dict[str, bytes]) -> None:
    """Set the server's spider attributes on a worker's spider (never over a method)."""
    bad: list[str] = []
    for name, blob in state.items():
        if not isinstance(name, str) or callable(getattr(type(spider), name, None)):
            continue
        try:
            value = pickle.loads(blob)  # from the authenticated server: trusted
        except Exception as exc:
            bad.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        setattr(spider, name, value)
    if bad:
        logger.warning(
            "spider %r: these attributes from the server could not be loaded here and keep "
            "this worker's own value: %s",
            spider.name,
            "; ".join(bad),
        )
