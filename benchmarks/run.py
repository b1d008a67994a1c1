"""The headline benchmark: spiderfarm against a bare asyncio loop and Scrapy, side by side.

One invocation serves one catalogue (nginx when installed, see ``site.py``) and crawls all
of it, alternating the variants, ``--repeat`` times each:

* ``w1`` / ``w2``: ``python -m spiderfarm crawl catalogue --workers 1`` / ``2``
* ``bare``: ``benchmarks/bare_loop.py`` (aiohttp + uvloop + parsel, no framework)
* ``scrapy``: ``scrapy runspider benchmarks/scrapy_spider.py`` (only if Scrapy is installed)

Each run is a subprocess. Pages/s comes from its wall clock (start to exit, start-up
included) and its verified item count; peak RSS and per-process CPU from sampling its
process tree with psutil every 0.1 s; CPU seconds from ``getrusage(RUSAGE_CHILDREN)``
around the run (the whole tree, children included). A run passes only if its feed holds
exactly one correct item per generated page with distinct URLs; otherwise it is FAILED
and has no speed.

    python benchmarks/run.py                          # 20,000 pages, 3 rounds
    python benchmarks/run.py --pages 5000 --repeat 1 --variants w1,bare
    python benchmarks/run.py --repeat 5 --scrapy-repeat 1   # Scrapy once, the rest 5 times
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bare_loop import DEFAULT_CONCURRENCY  # noqa: E402
from benchmarks.site import ServedSite  # noqa: E402
from spiderfarm.demosite import Catalogue  # noqa: E402
from spiderfarm.prespawn import WORKER_NAME  # noqa: E402

ALL_VARIANTS = ("w1", "w2", "bare", "scrapy")
DEFAULT_VARIANTS = ALL_VARIANTS
LABELS = {
    "w1": "spiderfarm --workers 1",
    "w2": "spiderfarm --workers 2",
    "bare": "bare aiohttp+parsel loop",
    "scrapy": "scrapy (defaults)",
}
# (numerator, denominator, target, how the target reads)
RATIOS = (
    ("w1", "bare", 1.2, ">= 1.2"),
    ("w1", "scrapy", 6.0, ">= 6"),
    ("w2", "w1", 1.6, ">= 1.6"),
)


@dataclass(slots=True)
class RunResult:
    variant: str
    round: int
    ok: bool
    reason: str
    wall_s: float
    pages: int  # verified items (one per page) when ok
    pages_per_s: float
    cpu_s: float  # whole tree, user + system
    cpu_s_per_1k: float
    site_cpu_s: float
    peak_rss_worker_mb: float  # the largest single crawling process
    peak_rss_tree_mb: float  # all processes of the run together
    other_cores: float = 0.0  # CPU used by unrelated processes during the run, in cores
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    reported: str = ""  # the tool's own last line, for reference
    stderr_tail: str = ""


# -- running one variant ------------------------------------------------------------------
def _command(variant: str, url: str, feed: Path, concurrency: int | None) -> list[str]:
    py = sys.executable
    if variant in ("w1", "w2"):
        argv = [
            py, "-m", "spiderfarm", "crawl", "catalogue", "--spiders-dir", str(ROOT / "spiders"),
            "-a", f"start_url={url}", "-o", str(feed), "--workers", variant[1], "-q",
        ]  # fmt: skip
        if concurrency:
            argv += ["-s", f"concurrency={concurrency}"]
        return argv
    if variant == "bare":
        return [
            py, str(HERE / "bare_loop.py"), url, "-o", str(feed),
            "--concurrency", str(concurrency or DEFAULT_CONCURRENCY),
        ]  # fmt: skip
    if variant == "scrapy":
        return [
            py, "-m", "scrapy", "runspider", str(HERE / "scrapy_spider.py"),
            "-a", f"start_url={url}", "-O", str(feed), "-s", "LOG_LEVEL=WARNING",
        ]  # fmt: skip
    raise ValueError(f"unknown variant {variant!r}")


def _role(proc: psutil.Process, top_pid: int) -> str:
    if proc.pid == top_pid:
        return "main"
    try:
        if proc.name() == WORKER_NAME:  # crawl's forked workers keep crawl's command line
            return "worker"
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    return "worker" if "spiderfarm.worker" in cmdline else "other"


def _tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class _Sampler:
    """Peak RSS and last-seen CPU per process of a running tree, sampled on demand."""

    def __init__(self, top_pid: int) -> None:
        self.top_pid = top_pid
        self.peak_single = 0
        self.peak_tree = 0
        self.cpu: dict[int, tuple[str, float]] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._tree: list[psutil.Process] = []
        self._n = 0

    def sample(self) -> None:
        # Finding the tree scans all of /proc: do it every 5th sample, not every one.
        if self._n % 5 == 0 or not self._tree:
            try:
                top = self._procs.get(self.top_pid) or psutil.Process(self.top_pid)
                self._procs[self.top_pid] = top
                found = [top, *top.children(recursive=True)]
            except psutil.Error:
                return
            self._tree = [self._procs.setdefault(p.pid, p) for p in found]
        self._n += 1
        tree = 0
        for proc in self._tree:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    t = proc.cpu_times()
            except psutil.Error:
                continue
            role = self.cpu[proc.pid][0] if proc.pid in self.cpu else _role(proc, self.top_pid)
            self.cpu[proc.pid] = (role, t.user + t.system)
            tree += rss
            # For spiderfarm the crawling processes are the workers; otherwise the only one.
            if role == "worker" or (role == "main" and not self._has_workers()):
                self.peak_single = max(self.peak_single, rss)
        self.peak_tree = max(self.peak_tree, tree)

    def _has_workers(self) -> bool:
        return any(role == "worker" for role, _ in self.cpu.values())

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for role, cpu in self.cpu.values():
            roles[role] = roles.get(role, 0.0) + cpu
        return {k: round(v, 2) for k, v in sorted(roles.items())}


def check_feed(feed: Path, site: ServedSite) -> tuple[bool, str, int]:
    """(ok, reason, items): exactly one correct item per page, distinct URLs, nothing else."""
    catalogue = site.catalogue
    base = site.url.rstrip("/")
    index = {base + path: i for i, path in enumerate(catalogue.paths())}
    if not feed.exists():
        return False, "no feed written", 0
    urls: set[str] = set()
    count = bad = unknown = unparsable = 0
    with feed.open(encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                continue
            count += 1
            try:
                item = json.loads(line)
            except ValueError:
                unparsable += 1
                continue
            url = item.get("url")
            i = index.get(url)
            if i is None:
                unknown += 1
                continue
            urls.add(url)
            want = catalogue.item(i)
            if (item.get("title"), item.get("price"), item.get("sku")) != (
                want["title"], want["price"], want["sku"],
            ):  # fmt: skip
                bad += 1
    expected = catalogue.pages
    problems = []
    if count != expected:
        problems.append(f"{count} items for {expected} pages")
    duplicates = count - unparsable - unknown - len(urls)
    if duplicates:
        problems.append(f"{duplicates} duplicate URLs")
    if len(urls) != expected:
        problems.append(f"{expected - len(urls)} pages missing")
    if bad:
        problems.append(f"{bad} wrong items")
    if unknown:
        problems.append(f"{unknown} unknown URLs")
    if unparsable:
        problems.append(f"{unparsable} lines that are not JSON")
    return not problems, "; ".join(problems), len(urls)


def run_once(
    variant: str,
    rnd: int,
    site: ServedSite,
    workdir: Path,
    concurrency: int | None,
    timeout_s: float,
) -> RunResult:
    feed = workdir / f"{variant}-{rnd}.jsonl"
    feed.unlink(missing_ok=True)
    argv = _command(variant, site.url, feed, concurrency)
    site_pids = _site_pids(site)
    site_cpu_before = _tree_cpu(site_pids)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = _system_busy_s()
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sampler = _Sampler(proc.pid)
    timed_out = False
    # Sampling on this thread while the child runs; communicate() at the end drains pipes.
    # The outputs are small (a summary line), so the pipes cannot fill up meanwhile.
    try:
        while proc.poll() is None:
            sampler.sample()
            if time.perf_counter() - started > timeout_s:
                timed_out = True
                _kill_tree(proc)
                break
            time.sleep(0.1)
    except BaseException:  # Ctrl-C or SIGTERM: take the run down with us
        _kill_tree(proc)
        proc.wait()
        raise
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    site_cpu = _tree_cpu(site_pids) - site_cpu_before
    other = max(0.0, _system_busy_s() - busy_before - cpu - site_cpu)
    lines = out.decode(errors="replace").strip().splitlines()
    reported = next((ln for ln in lines if ln.startswith("crawl ")), lines[-1] if lines else "")
    err_tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
    if timed_out:
        ok, reason, pages = False, f"timed out after {timeout_s:.0f}s: {err_tail}", 0
    elif proc.returncode != 0:
        ok, reason, pages = False, f"exit code {proc.returncode}: {err_tail}", 0
    else:
        ok, reason, pages = check_feed(feed, site)
    feed.unlink(missing_ok=True)
    rate = pages / wall if ok else 0.0
    return RunResult(
        variant=variant,
        round=rnd,
        ok=ok,
        reason=reason,
        wall_s=round(wall, 3),
        pages=pages,
        pages_per_s=round(rate, 1),
        cpu_s=round(cpu, 2),
        cpu_s_per_1k=round(cpu / pages * 1000, 3) if pages else 0.0,
        site_cpu_s=round(site_cpu, 2),
        peak_rss_worker_mb=round(sampler.peak_single / 2**20, 1),
        peak_rss_tree_mb=round(sampler.peak_tree / 2**20, 1),
        other_cores=round(other / wall, 2),
        cpu_by_role=sampler.by_role(),
        reported=reported,
        stderr_tail=err_tail[-2000:],
    )


def _system_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (steal included: it is lost to us)."""
    t = psutil.cpu_times()
    busy = t.user + t.system
    for name in ("nice", "irq", "softirq", "steal"):
        busy += getattr(t, name, 0.0)
    return float(busy)


def settle(site: ServedSite, max_wait_s: float, quiet_cores: float = 0.3) -> tuple[float, float]:
    """Wait (up to ``max_wait_s``) until other processes use under ``quiet_cores`` of CPU
    for a second; returns (seconds waited, the last load seen in cores)."""
    started = time.perf_counter()
    load = 0.0
    while True:
        pids = _site_pids(site)
        busy0, site0, t0 = _system_busy_s(), _tree_cpu(pids), time.perf_counter()
        time.sleep(1.0)
        elapsed = time.perf_counter() - t0
        load = max(0.0, _system_busy_s() - busy0 - (_tree_cpu(pids) - site0)) / elapsed
        waited = time.perf_counter() - started
        if load < quiet_cores or waited >= max_wait_s:
            return waited, load


def _site_pids(site: ServedSite) -> list[int]:
    if site.pid is None:
        return []
    try:
        top = psutil.Process(site.pid)
        return [top.pid] + [p.pid for p in top.children(recursive=True)]
    except psutil.Error:
        return []


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    proc.kill()


# -- reporting ------------------------------------------------------------------------------
def summarise(results: list[RunResult], variants: list[str]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for v in variants:
        runs = [r for r in results if r.variant == v]
        good = [r for r in runs if r.ok]
        rates = [r.pages_per_s for r in good]
        summary[v] = {
            "runs": len(runs),
            "ok": len(good),
            "median": statistics.median(rates) if rates else None,
            "min": min(rates) if rates else None,
            "max": max(rates) if rates else None,
            "peak_rss_worker_mb": max((r.peak_rss_worker_mb for r in runs), default=0.0),
            "peak_rss_tree_mb": max((r.peak_rss_tree_mb for r in runs), default=0.0),
            "cpu_s_per_1k": statistics.median([r.cpu_s_per_1k for r in good]) if good else None,
            "site_cpu_s_per_1k": (
                statistics.median([r.site_cpu_s / r.pages * 1000 for r in good]) if good else None
            ),
            "other_cores": statistics.median([r.other_cores for r in runs]) if runs else 0.0,
            "failures": [f"round {r.round}: {r.reason}" for r in runs if not r.ok],
        }
    return summary


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def per_round(results: list[RunResult], num: str, den: str) -> list[float]:
    """``num``/``den`` in pages/s within each round both ran in: the VM's speed drifts
    between rounds, and a round's variants run minutes apart at most."""
    rates = {(r.variant, r.round): r.pages_per_s for r in results if r.ok}
    rounds = sorted({r.round for r in results})
    return [
        rates[num, rnd] / rates[den, rnd]
        for rnd in rounds
        if (num, rnd) in rates and (den, rnd) in rates
    ]


def print_table(
    summary: dict[str, dict[str, Any]], results: list[RunResult]
) -> list[dict[str, Any]]:
    header = (
        f"{'variant':<26}{'ok':>6}{'median p/s':>12}{'min':>9}{'max':>9}"
        f"{'RSS/proc MB':>13}{'RSS tree MB':>13}{'CPU s/1k':>10}{'site CPU s/1k':>15}"
        f"{'other load':>12}"
    )
    print(header)
    print("-" * len(header))
    for v, s in summary.items():
        print(
            f"{LABELS[v]:<26}{s['ok']:>3}/{s['runs']:<2}{_fmt(s['median'], '.0f'):>12}"
            f"{_fmt(s['min'], '.0f'):>9}{_fmt(s['max'], '.0f'):>9}"
            f"{s['peak_rss_worker_mb']:>13.1f}{s['peak_rss_tree_mb']:>13.1f}"
            f"{_fmt(s['cpu_s_per_1k'], '.3f'):>10}{_fmt(s['site_cpu_s_per_1k'], '.3f'):>15}"
            f"{s['other_cores']:>12.2f}"
        )
    for v, s in summary.items():
        for failure in s["failures"]:
            print(f"FAILED {LABELS[v]}: {failure}")
    print(
        "(RSS/proc: peak of the largest crawling process, i.e. a worker for spiderfarm; "
        "CPU s/1k: whole process tree;\n other load: cores busy with unrelated processes "
        "during the runs, median; above ~0.1 the speeds are disturbed)"
    )
    print()
    ratios = []
    for num, den, target, text in RATIOS:
        a = summary.get(num, {}).get("median")
        b = summary.get(den, {}).get("median")
        if not a or not b:
            continue
        ratio = a / b
        verdict = (
            text
            if text.startswith("(")
            else f"target {text}: " + ("met" if ratio >= target else "MISSED")
        )
        line = f"ratio {num}/{den} (median pages/s): {ratio:5.2f}   {verdict}"
        # CPU per page does not depend on what else the machine runs: a steadier comparison.
        ca = summary[num].get("cpu_s_per_1k")
        cb = summary[den].get("cpu_s_per_1k")
        if ca and cb and den in ("bare", "scrapy"):
            line += f"   (CPU per page, {den}/{num}: {cb / ca:.2f})"
        rounds = per_round(results, num, den)
        if len(rounds) > 1:
            line += (
                f"\n    per round: {', '.join(f'{x:.2f}' for x in rounds)}"
                f" (median {statistics.median(rounds):.2f})"
            )
        print(line)
        ratios.append(
            {
                "ratio": f"{num}/{den}",
                "value": round(ratio, 3),
                "target": target,
                "per_round": [round(x, 3) for x in rounds],
            }
        )
    return ratios


def machine_info(site: ServedSite) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "site_server": site.kind,
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: the site and the running crawl are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(
        description="Crawl one served catalogue with spiderfarm, a bare loop and Scrapy."
    )
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--links-per-page", type=int, default=20)
    parser.add_argument("--page-bytes", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument(
        "--scrapy-repeat",
        type=int,
        metavar="N",
        help="runs of Scrapy, which is 15-20x slower (default: --repeat); its runs come in "
        "the first N rounds",
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated, from w1,w2,bare,scrapy (default: all four; scrapy only if "
        "installed)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"requests in flight per crawling process for spiderfarm and the bare loop "
        f"(default: the catalogue spider's setting, {DEFAULT_CONCURRENCY}); Scrapy keeps "
        "its defaults",
    )
    parser.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for other processes to use under 0.3 "
        "cores (for shared machines; default 0: do not wait)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run and the summary")
    args = parser.parse_args(argv)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(ALL_VARIANTS)}")
    if "scrapy" in variants and importlib.util.find_spec("scrapy") is None:
        print("scrapy is not installed (pip install scrapy): skipping it", file=sys.stderr)
        variants.remove("scrapy")
    if not variants:
        parser.error("no variants to run")

    catalogue = Catalogue(args.pages, args.links_per_page, args.page_bytes, args.seed)
    print(f"writing/serving {catalogue.pages} pages ...", flush=True)
    with (
        ServedSite(catalogue, args.server) as site,
        tempfile.TemporaryDirectory(prefix="spiderfarm-bench-") as tmp,
    ):
        info = machine_info(site)
        print(
            f"{info['date']}  {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}"
            f", site: {site.kind} at {site.url}, {catalogue.pages} pages of ~"
            f"{catalogue.page_bytes} B, {catalogue.links_per_page} links each",
            flush=True,
        )
        results: list[RunResult] = []
        scrapy_repeat = args.repeat if args.scrapy_repeat is None else args.scrapy_repeat
        for rnd in range(max(args.repeat, scrapy_repeat)):
            shift = rnd % len(variants)  # rotate the order so no variant always goes first
            for v in variants[shift:] + variants[:shift]:
                if rnd >= (scrapy_repeat if v == "scrapy" else args.repeat):
                    continue
                if args.settle > 0:
                    waited, load = settle(site, args.settle)
                    if waited > 1.5:
                        print(f"  (waited {waited:.0f}s for a quieter machine: load {load:.2f})")
                r = run_once(v, rnd, site, Path(tmp), args.concurrency, args.timeout)
                results.append(r)
                status = f"{r.pages_per_s:8.1f} pages/s" if r.ok else f"FAILED ({r.reason})"
                print(
                    f"round {rnd + 1} {LABELS[v]:<26} {status}  wall {r.wall_s:.2f}s  "
                    f"cpu {r.cpu_s:.1f}s {r.cpu_by_role}  site cpu {r.site_cpu_s:.1f}s  "
                    f"other load {r.other_cores:.2f} cores  "
                    f"| {r.reported}",
                    flush=True,
                )
        print()
        summary = summarise(results, variants)
        ratios = print_table(summary, results)
    if args.json:
        payload = {
            "machine": info,
            "options": vars(args),
            "summary": summary,
            "ratios": ratios,
            "runs": [asdict(r) for r in results],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    failed = any(not r.ok for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
