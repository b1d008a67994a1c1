"""Frontier micro-benchmark: pushes, leases and acks, in-process and through the manager.

Prints operations per second and memory per URL next to the targets of issue 6:

* pushes with dedup, in-process (``Frontier.push``): target >= 200,000/s
* lease + ack cycles, in-process (``Frontier.exchange``), per ``--batch`` size
* lease + ack through the real manager (``FarmServer`` in this process, ``FrontierClient``
  in ``--clients`` separate processes): target >= 100,000 leased-and-acked requests/s
* bytes per seen fingerprint (target <= 120) and per queued request (target <= 600) at
  ``--memory-urls`` URLs (1,000,000 by default), from tracemalloc, with an RSS cross-check
  measured in a fresh process

    python benchmarks/frontier_bench.py                        # everything, ~1-2 minutes
    python benchmarks/frontier_bench.py --skip memory --batch 100,500,1000

Requests are built as the worker builds them (``Request.to_wire()`` field order), with
64-bit blake2b fingerprints of ``http://hostN.example/product/I.html``-style URLs; the
time to build them is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import multiprocessing as mp
import os
import secrets
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spiderfarm.frontier import Frontier  # noqa: E402
from spiderfarm.protocol import Outcome, PushEntry  # noqa: E402
from spiderfarm.settings import Settings  # noqa: E402

TARGETS = {
    "push": 200_000.0,  # pushes/s with dedup, in-process
    "manager": 100_000.0,  # leased-and-acked requests/s through the manager, with batches
    "fingerprint_bytes": 120.0,
    "queued_bytes": 600.0,
}
OK_INFO = (200, 0.0, 0.0)
ITEM = (
    '{"url": "http://host0.example/product/123456.html", "title": "Product 123456: Amber '
    'Anchor", "price": "£123.45", "sku": "SKU-123456"}'
)
# Every host cap, delay and robots.txt out of the way: these measure the data structure,
# not politeness. Keys this version of the package does not have are left out.
_WANTED = {
    "per_host_concurrency": 10_000_000,
    "lease_timeout_s": 3600.0,
    "obey_robots": False,
    "autothrottle": False,
    "delay_s": 0.0,
}
BENCH_SETTINGS = {k: v for k, v in _WANTED.items() if k in Settings.__dataclass_fields__}


def _settings() -> Settings:
    return Settings.merge(BENCH_SETTINGS)


def _fp(url: str) -> int:
    data = f"GET {url}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def entry(i: int, hosts: int) -> PushEntry:
    """The ``i``th distinct request, as the worker sends it: (fingerprint, host, wire)."""
    host = f"host{i % hosts}.example"
    url = f"http://{host}/product/{i}.html"
    wire = (url, "parse", "GET", None, None, None, 0, False, None, 1, None)
    return (_fp(url), host, wire)


def batches(start: int, n: int, hosts: int, size: int) -> Iterator[list[PushEntry]]:
    for lo in range(start, start + n, size):
        yield [entry(i, hosts) for i in range(lo, min(lo + size, start + n))]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _line(label: str, value: float, unit: str, target: float | None = None, le: bool = False):
    text = f"  {label:<58}{value:>14,.0f} {unit}"
    if target is not None:
        met = value <= target if le else value >= target
        sign = "<=" if le else ">="
        text += f"   target {sign} {target:,.0f}: {'met' if met else 'MISSED'}"
    print(text, flush=True)


# -- in-process ------------------------------------------------------------------------------
def bench_push(n: int, hosts: int, batch: int) -> dict[str, float]:
    prepared = list(batches(0, n, hosts, batch))
    frontier = Frontier(_settings())
    gc.collect()
    t0 = time.perf_counter()
    for b in prepared:
        frontier.push(b)
    fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in prepared:
        frontier.push(b)
    dup = time.perf_counter() - t0
    assert frontier.status()["queued"] == n
    return {
        "fresh": _rate(n, fresh),
        "duplicate": _rate(n, dup),
        "mixed": _rate(2 * n, fresh + dup),
    }


def bench_lease_ack(n: int, hosts: int, batch: int, with_payload: bool) -> float:
    """Leased-and-acked requests/s through ``Frontier.exchange`` (one call acks a batch and
    leases the next). With ``with_payload`` each ack carries one item and one new request,
    as a crawl's acks do (the queue stays level). Building outcomes is not counted."""
    frontier = Frontier(_settings())
    for b in batches(0, n, hosts, 10_000):
        frontier.push(b)
    news = [entry(i, hosts) for i in range(10**8, 10**8 + n)] if with_payload else []
    items = [ITEM] if with_payload else []
    gc.collect()
    done = k = 0
    building = 0.0
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    while done < n:
        leases, _, _ = frontier.exchange("bench", outcomes, batch)
        done += len(outcomes)
        if not leases:
            break
        t = time.perf_counter()
        outcomes = []
        for lease in leases:
            new = [news[k]] if k < len(news) else []
            k += 1
            outcomes.append((lease[0], "ok", "", new, items, OK_INFO))
        building += time.perf_counter() - t
    frontier.exchange("bench", outcomes, 0)
    done += len(outcomes)
    return _rate(done, time.perf_counter() - t0 - building)


# -- through the manager -------------------------------------------------------------------
def _client_process(
    address: tuple[str, int],
    authkey: bytes,
    batch: int,
    with_items: bool,
    results: Any,
) -> None:
    import uvloop

    from spiderfarm.client import FrontierClient

    async def go() -> tuple[int, float, float]:
        client = FrontierClient(address, authkey)
        welcome = await client.hello({"host": "bench", "pid": os.getpid()})
        wid = welcome["worker_id"]
        outcomes: list[Outcome] = []
        done, calls = 0, 0
        t0 = time.perf_counter()
        items = [ITEM] if with_items else []
        while True:
            leases, _, _ = await client.exchange(wid, outcomes, batch)
            calls += 1
            done += len(outcomes)
            if not leases:
                # Nothing new is pushed here, so an empty lease means the queue is drained.
                break
            outcomes = [(lease[0], "ok", "", [], items, OK_INFO) for lease in leases]
        elapsed = time.perf_counter() - t0
        await client.bye(wid)
        await client.close()
        return done, elapsed, elapsed / max(calls, 1)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results.put(runner.run(go()))


def bench_manager(
    n: int, hosts: int, batch: int, clients: int, with_items: bool
) -> tuple[float, float]:
    """(leased-and-acked requests/s over all clients, mean round trip in ms)."""
    from spiderfarm.server import FarmServer, ServerConfig

    authkey = secrets.token_bytes(32)
    config = ServerConfig(
        spider_ref="catalogue",
        spiders_dir=ROOT / "spiders",
        overrides=dict(BENCH_SETTINGS),
        bind=("127.0.0.1", 0),
        authkey=authkey,
    )
    server = FarmServer(config)
    for b in batches(0, n, hosts, 10_000):
        server.frontier.push(b)
    address = server.listen()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_client_process, args=(address, authkey, batch, with_items, results))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    server.stop()
    done = sum(g[0] for g in got)
    if done != n:
        print(f"  warning: {done} of {n} requests acked through the manager", flush=True)
    elapsed = max(g[1] for g in got)
    rtt_ms = 1000 * sum(g[2] for g in got) / len(got)
    return _rate(done, elapsed), rtt_ms


# -- memory --------------------------------------------------------------------------------
def measure_memory(n: int, hosts: int, use_tracemalloc: bool) -> dict[str, float]:
    """Bytes per queued request (push n distinct) and per seen fingerprint (after draining)."""
    proc = psutil.Process()
    gc.collect()
    if use_tracemalloc:
        tracemalloc.start()
    base_py = tracemalloc.get_traced_memory()[0] if use_tracemalloc else 0
    base_rss = proc.memory_info().rss
    frontier = Frontier(_settings())
    for b in batches(0, n, hosts, 10_000):
        frontier.push(b)
    del b
    gc.collect()
    queued_py = (tracemalloc.get_traced_memory()[0] - base_py) if use_tracemalloc else 0
    queued_rss = proc.memory_info().rss - base_rss
    # Lease and ack everything: what remains is the seen set (and small bookkeeping).
    outcomes: list[Outcome] = []
    while True:
        leases, _, _ = frontier.exchange("bench", outcomes, 10_000)
        if not leases:
            break
        outcomes = [(lease[0], "ok", "", [], [], OK_INFO) for lease in leases]
    del leases, outcomes
    gc.collect()
    seen_py = (tracemalloc.get_traced_memory()[0] - base_py) if use_tracemalloc else 0
    if use_tracemalloc:
        tracemalloc.stop()
    assert frontier.status()["seen"] == n
    return {
        "queued_py": queued_py / n,
        "seen_py": seen_py / n,
        "queued_rss": queued_rss / n,
    }


def _memory_child(n: int, hosts: int, results: Any) -> None:
    results.put(measure_memory(n, hosts, use_tracemalloc=False))


def memory_rss_in_fresh_process(n: int, hosts: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(n, hosts, results))
    p.start()
    out: dict[str, float] = results.get(timeout=600)
    p.join(30)
    return out


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Frontier micro-benchmark (see module doc).")
    parser.add_argument("--urls", type=int, default=200_000, help="requests per timing run")
    parser.add_argument("--hosts", type=int, default=100, help="distinct hosts (default 100)")
    parser.add_argument("--push-batch", type=int, default=1000, help="entries per push call")
    parser.add_argument("--batch", default="100,500", help="lease/ack batch sizes, comma-separated")
    parser.add_argument("--clients", type=int, default=1, help="client processes (manager)")
    parser.add_argument("--memory-urls", type=int, default=1_000_000)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: push, inprocess, manager, memory",
    )
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sizes = [int(s) for s in args.batch.split(",") if s.strip()]
    load = os.getloadavg()[0]
    print(
        f"frontier benchmark: {args.urls:,} requests over {args.hosts} hosts; "
        f"{os.cpu_count()} CPUs, load average {load:.2f}, Python {sys.version.split()[0]}",
        flush=True,
    )

    if "push" not in skip:
        print(f"in-process pushes (Frontier.push, batches of {args.push_batch}):")
        r = bench_push(args.urls, args.hosts, args.push_batch)
        _line("new URLs (dedup check + enqueue)", r["fresh"], "pushes/s", TARGETS["push"])
        _line("repeated URLs (dedup drops them)", r["duplicate"], "pushes/s", TARGETS["push"])
        _line("half new, half repeated", r["mixed"], "pushes/s", TARGETS["push"])

    if "inprocess" not in skip:
        print("in-process lease + ack (Frontier.exchange: ack a batch, lease the next):")
        for size in sizes:
            rate = bench_lease_ack(args.urls, args.hosts, size, with_payload=False)
            _line(f"batch {size}, bare acks", rate, "req/s")
            rate = bench_lease_ack(args.urls, args.hosts, size, with_payload=True)
            _line(f"batch {size}, each ack with 1 item + 1 new request", rate, "req/s")

    if "manager" not in skip:
        print(
            f"through the manager (FarmServer here, FrontierClient in {args.clients} "
            "other process(es)):"
        )
        for size in sizes:
            for with_items in (False, True):
                rate, rtt = bench_manager(args.urls, args.hosts, size, args.clients, with_items)
                what = "acks with 1 item each" if with_items else "bare acks"
                _line(
                    f"batch {size}, {what} (round trip {rtt:.2f} ms)",
                    rate,
                    "req/s",
                    TARGETS["manager"],
                )

    if "memory" not in skip:
        n = args.memory_urls
        print(f"memory at {n:,} URLs (tracemalloc; RSS delta from a fresh process):")
        m = measure_memory(n, args.hosts, use_tracemalloc=True)
        rss = memory_rss_in_fresh_process(n, args.hosts)
        _line("per queued request (seen + queued), tracemalloc", m["queued_py"], "B",
              TARGETS["queued_bytes"], le=True)  # fmt: skip
        _line("per queued request, RSS delta", rss["queued_rss"], "B",
              TARGETS["queued_bytes"], le=True)  # fmt: skip
        _line("per seen fingerprint (after all acked), tracemalloc", m["seen_py"], "B",
              TARGETS["fingerprint_bytes"], le=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
