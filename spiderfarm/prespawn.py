"""``crawl``'s (and ``demo``'s) workers, forked from ``crawl`` itself once the worker's
modules are loaded.

A worker spends about a third of a second importing aiohttp, parsel and lxml before it
can connect; ``crawl`` imports the same and then the server, the feeds and the console
before it listens. Started as new processes, N workers import it all N more times, on a
machine that has as few cores as workers. ``python -m spiderfarm crawl`` therefore
imports the worker's modules first (``spiderfarm.worker.main``: nothing of the server's),
forks its workers from the options that decide how they run (``--workers``,
``--spiders-dir``, ``--log-level``), and only then imports the rest of the command line.
Each worker waits on a pipe for ``HOST:PORT KEYHEX``, written once the server listens
(the key is in no environment and no command line), and exits quietly if the pipe closes
unwritten: the command failed first, or the full command line asks for other workers, who
are then started the usual way (``python -m spiderfarm.worker --connect``).

Each forked worker is pinned to a CPU of its own when there are as many CPUs (of those
crawl may use) as workers, unless ``--no-pin``: the server moving between them, a worker
that the scheduler moves from core to core runs on cold caches (on a 2-vCPU VM, a
``--workers 2`` crawl of link-dense pages took ~10 % more CPU per page unpinned).

Where ``fork`` is not there (Windows), or a thread is already running (started by a
sitecustomize or a ``.pth`` file: forking would copy any lock it holds), nothing is
forked: crawl starts its workers the usual way. A feed on standard output is the other
case: the workers' standard output must go to standard error (see ``crawl``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

__all__ = ["WORKER_NAME", "ForkedWorker", "Prespawned", "demo_spiders_dir", "prespawn", "take"]

#: A forked worker's process name (``ps -o comm``, ``top``; Linux keeps 15 characters):
#: its command line is crawl's.
WORKER_NAME = "spiderfarm-wkr"


class ForkedWorker:
    """A worker forked from ``crawl``, with the part of ``subprocess.Popen`` that crawl
    uses: ``pid``, ``poll()``, ``wait(timeout)``, ``kill()``."""

    def __init__(self, process: BaseProcess, pipe: int) -> None:
        self._process = process
        self.pipe = pipe  # the write end; the worker reads the other one

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"spiderfarm worker {self.pid}", timeout or 0.0)
        return code

    def kill(self) -> None:
        if self._process.exitcode is None:
            self._process.kill()


class Prespawned:
    """Forked workers, each waiting on its pipe for an address and a key."""

    def __init__(
        self, workers: list[ForkedWorker], spiders_dir: str, log_level: str, no_pin: bool
    ) -> None:
        self.workers = workers
        self.spiders_dir = spiders_dir
        self.log_level = log_level
        self.no_pin = no_pin

    def matches(
        self, n: int, spiders_dir: str, log_level: str, no_pin: bool, stdout: int | None
    ) -> bool:
        return (
            len(self.workers) == n
            and self.spiders_dir == spiders_dir
            and self.log_level == log_level
            and self.no_pin == no_pin
            and stdout is None
        )

    def send(self, address: tuple[str, int], authkey: bytes) -> list[ForkedWorker]:
        """Tell each worker where to connect; returns them."""
        line = f"{address[0]}:{address[1]} {authkey.hex()}\n".encode()
        for worker in self.workers:
            # A worker that died already is noticed as any dead one.
            with contextlib.suppress(OSError):
                os.write(worker.pipe, line)
            with contextlib.suppress(OSError):
                os.close(worker.pipe)
        return self.workers

    def dismiss(self) -> None:
        """Close the pipes unwritten: each worker exits without connecting."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                os.close(worker.pipe)
        for worker in self.workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


_started: Prespawned | None = None


def take() -> Prespawned | None:
    """The forked workers, once (None if none were started)."""
    global _started
    started, _started = _started, None
    return started


def demo_spiders_dir() -> Path:
    """Where ``demo`` finds its ``catalogue`` spider: ``./spiders`` if it is there (a
    checkout), else the one installed beside the package."""
    local = Path("spiders")
    if (local / "catalogue.py").is_file():
        return local
    return Path(__file__).resolve().parents[1] / "spiders"


def _options(argv: Sequence[str]) -> argparse.Namespace | None:
    if not argv or argv[0] not in ("crawl", "demo") or {"-h", "--help"} & set(argv):
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    if argv[0] == "crawl":
        parser.add_argument("--spiders-dir", default="spiders")
    else:
        parser.set_defaults(spiders_dir=str(demo_spiders_dir()))
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--no-pin", action="store_true")
    for flag, dest in [("-o", "o"), ("-O", "big_o"), ("--output", "output"),
                       ("--overwrite-output", "overwrite")]:  # fmt: skip
        parser.add_argument(flag, action="append", default=[], dest=dest)
    try:
        options, _ = parser.parse_known_args(list(argv[1:]))
    except SystemExit:  # the real parser will say what is wrong
        return None
    feeds = [*options.o, *options.big_o, *options.output, *options.overwrite]
    if options.workers < 1 or any(f == "-" or f.startswith("-:") for f in feeds):
        return None  # a feed on stdout: workers' stdout goes to stderr (see crawl)
    return options


def _cpus() -> list[int]:
    """The CPUs this process may run on (all of them where that cannot be asked)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _run_forked(
    fd: int, others: list[int], spiders_dir: str, log_level: str, cpu: int | None
) -> None:
    """The forked worker's whole life (multiprocessing takes the SystemExit's code)."""
    for other in others:  # the other workers' write ends: their pipes must see EOF
        os.close(other)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):  # a CPU gone offline since: run anywhere
            os.sched_setaffinity(0, {cpu})
    # what ps -o comm and top show (Linux)
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(WORKER_NAME)
    from .worker.main import run_told

    sys.exit(run_told(fd, spiders_dir, log_level))


def prespawn(argv: Sequence[str]) -> Prespawned | None:
    """Fork the workers ``crawl`` (or ``demo``) will need, if ``argv`` is its command line."""
    global _started
    options = _options(argv)
    if options is None or "fork" not in multiprocessing.get_all_start_methods():
        return None
    from .worker import main  # noqa: F401 - loaded once here, shared by every fork

    if threading.active_count() > 1:
        # Started by a sitecustomize or a .pth file: a thread may hold a lock (logging's,
        # an allocator's) that the fork would copy held, forever.
        return None

    context = multiprocessing.get_context("fork")
    gc.freeze()  # what is loaded now stays shared: no collection touches (copies) it
    workers: list[ForkedWorker] = []
    cpus = _cpus()
    pin = not options.no_pin and 1 < options.workers <= len(cpus)
    for n in range(options.workers):
        read_end, write_end = os.pipe()
        pipes = [w.pipe for w in workers] + [write_end]
        process = context.Process(
            target=_run_forked,
            args=(read_end, pipes, options.spiders_dir, options.log_level,
                  cpus[n] if pin else None),
            name="spiderfarm-worker",
        )  # fmt: skip
        try:
            process.start()
        except OSError:  # out of processes or memory: crawl starts them the usual way
            os.close(write_end)
            Prespawned(workers, "", "", False).dismiss()
            return None
        finally:
            os.close(read_end)
        workers.append(ForkedWorker(process, write_end))
    _started = Prespawned(workers, options.spiders_dir, options.log_level, options.no_pin)
    # Before multiprocessing's own exit hook (which joins its children): a crawl that
    # fails before it takes them closes their pipes, and they exit.
    atexit.register(_dismiss_untaken)
    return _started


def _dismiss_untaken() -> None:
    started = take()
    if started is not None:
        started.dismiss()
