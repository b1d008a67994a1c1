"""Service mode (``--serve``): the push rate, the idle farm's CPU, and the result queue's
memory bound.

Three figures, each from real processes on 127.0.0.1:

* ``push``: 100,000 URLs into a serving server with no workers, through
  ``spiderfarm.connect().submit`` (batches of 1,000), through ``python -m spiderfarm push``
  from stdin, and one ``task.put(url)`` at a time with the stock ``BaseManager`` client
  of the seed snippet (on a sample, as URLs per second);
* ``idle``: ``crawl --serve --workers 2`` with nothing to do: CPU of the server and of
  each worker over ``--idle-s`` seconds (default 60), as a percentage of one core;
* ``memory``: the server's RSS while a farm with no result reader crawls ``--pages``
  catalogue pages pushed at once (every page one result): the held results stop at
  ``result_queue_size`` (10,000) and the rest are counted as dropped.

    python benchmarks/service_bench.py                    # all three (~2.5 min)
    python benchmarks/service_bench.py --parts push,memory --idle-s 20
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from multiprocessing.managers import BaseManager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import spiderfarm  # noqa: E402
from benchmarks.site import ServedSite  # noqa: E402
from spiderfarm.demosite import Catalogue  # noqa: E402

SPIDER = """
from spiderfarm import Spider

class Pages(Spider):
    name = "pages"
    custom_settings = {"per_host_concurrency": 64, "autothrottle": False, "obey_robots": False}

    def parse(self, response):
        yield {"url": response.url, "title": response.css("h1.title::text").get()}
"""


def _start(argv: list[str], tmp: Path, pattern: str) -> tuple[subprocess.Popen[bytes], str]:
    out = tmp / f"out-{time.monotonic_ns()}.txt"
    with out.open("wb") as fh:
        proc = subprocess.Popen(argv, cwd=tmp, stdout=fh, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(pattern, out.read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{argv} did not start: {out.read_text()}")


def _server(tmp: Path, key: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "spiderfarm.server", "pages", "--serve", "--spiders-dir",
            str(tmp), "--bind", "127.0.0.1:0", "--authkey-file", str(key), *extra]  # fmt: skip
    return _start(argv, tmp, r"listening on (127\.0\.0\.1:\d+)")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_push(tmp: Path, key: Path, n: int) -> None:
    print(f"push: {n:,} URLs into a serving server with no workers")
    urls = [f"http://127.0.0.1:9/a/{i}" for i in range(n)]
    proc, address = _server(tmp, key)
    try:
        client = spiderfarm.connect(address, authkey_file=str(key))
        started = time.perf_counter()
        done = client.submit(urls)
        took = time.perf_counter() - started
        assert done.accepted == n, done
        print(f"  spiderfarm.connect().submit:  {took:6.2f} s  {n / took:9,.0f} URLs/s")
        text = "".join(f"http://127.0.0.1:9/b/{i}\n" for i in range(n))
        started = time.perf_counter()
        push = subprocess.run(
            [sys.executable, "-m", "spiderfarm", "push", "--connect", address,
             "--authkey-file", str(key)],
            input=text.encode(), capture_output=True, check=True,
        )  # fmt: skip
        took = time.perf_counter() - started
        print(f"  push < stdin (whole command): {took:6.2f} s  {n / took:9,.0f} URLs/s  "
              f"({push.stderr.decode().splitlines()[0]})")  # fmt: skip

        class QueueManager(BaseManager):
            pass

        QueueManager.register("get_task_queue")
        host, port = address.split(":")
        m = QueueManager(address=(host, int(port)), authkey=bytes.fromhex(key.read_text()))
        m.connect()
        task = m.get_task_queue()  # type: ignore[attr-defined]
        sample = min(n, 5_000)
        started = time.perf_counter()
        for i in range(sample):
            task.put(f"http://127.0.0.1:9/c/{i}")
        took = time.perf_counter() - started
        print(f"  seed client, task.put singly: {took:6.2f} s  {sample / took:9,.0f} URLs/s "
              f"({sample:,} URLs, {took / sample * 1e6:.0f} us a put)")  # fmt: skip
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"  server RSS holding {2 * n + sample:,} queued requests: {rss:.0f} MiB")
    finally:
        _stop(proc)


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def bench_idle(tmp: Path, key: Path, seconds: float) -> None:
    print(f"idle: crawl --serve --workers 2 with nothing to do, over {seconds:g} s")
    argv = [sys.executable, "-m", "spiderfarm", "crawl", "pages", "--serve", "--workers", "2",
            "--spiders-dir", str(tmp), "--authkey-file", str(key), "-q"]  # fmt: skip
    proc, _ = _start(argv, tmp, r"serving on (127\.0\.0\.1:\d+)")
    try:
        server = psutil.Process(proc.pid)
        deadline = time.monotonic() + 20
        while len(server.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(5)  # the workers have joined and settled
        procs = [server, *server.children()]
        before = [_cpu(p) for p in procs]
        time.sleep(seconds)
        after = [_cpu(p) for p in procs]
        for name, b, a in zip(["server", "worker 1", "worker 2"], before, after, strict=False):
            print(f"  {name:<9} {a - b:6.3f} s CPU = {100 * (a - b) / seconds:5.2f} % of a core")
    finally:
        _stop(proc)


def bench_memory(tmp: Path, key: Path, pages: int) -> None:
    print(f"memory: {pages:,} pages pushed, 2 workers, nobody reading results")
    site = ServedSite(Catalogue(pages=pages), server="auto")
    base = site.start()
    proc, address = _server(tmp, key)
    env = {**os.environ, "SPIDERFARM_AUTHKEY": key.read_text().strip()}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spiderfarm.worker",
                "--connect",
                address,
                "--spiders-dir",
                str(tmp),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        client = spiderfarm.connect(address, authkey_file=str(key))
        server = psutil.Process(proc.pid)
        rss0 = server.memory_info().rss / 2**20
        urls = [base] + [f"{base}product/{i}.html" for i in range(1, pages)]
        client.submit(urls)
        print(f"  server RSS before: {rss0:.0f} MiB (holding {pages:,} queued requests)")
        marks = [pages // 4, pages // 2, 3 * pages // 4, pages]
        while marks:
            r = _results(address, key)
            if r["produced"] >= marks[0]:
                rss = server.memory_info().rss / 2**20
                held_mib = r["held_bytes"] / 2**20
                print(
                    f"  {r['produced']:>7,} results: {r['held']:>6,} held ({held_mib:5.1f} MiB), "
                    f"{r['dropped']:>6,} dropped; server RSS {rss:.0f} MiB"
                )
                marks.pop(0)
            time.sleep(0.2)
    finally:
        for w in workers:
            w.terminate()
        _stop(proc)
        for w in workers:
            w.wait(20)
        site.stop()


def _results(address: str, key: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "spiderfarm", "status", "--connect", address, "--authkey-file",
         str(key), "--json"], capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    import json

    return dict(json.loads(out)["results"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="push,idle,memory")
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--pages", type=int, default=30_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "pages.py").write_text(SPIDER)
        key = tmp / "farm.key"
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
        parts = args.parts.split(",")
        if "push" in parts:
            bench_push(tmp, key, args.urls)
        if "idle" in parts:
            bench_idle(tmp, key, args.idle_s)
        if "memory" in parts:
            bench_memory(tmp, key, args.pages)


if __name__ == "__main__":
    main()
