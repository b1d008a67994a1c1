"""``status``: a running server's state, as a table for a person or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..client import FrontierClient
from ..runtime import run_async
from ..security import parse_address, require_authkey


def run_status(args: argparse.Namespace) -> int:
    key = require_authkey(args.authkey_file)
    detail = bool(args.hosts or not args.json)

    async def go() -> dict[str, Any]:
        client = FrontierClient(parse_address(args.connect), key, give_up_s=5)
        try:
            return await client.status(detail=detail)
        finally:
            await client.close()

    while True:
        status = run_async(go())
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True), flush=True)
        else:
            text = "\n".join(status_table(status, args.connect))
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: refresh in place
            print(text, flush=True)
        if not args.watch or status["state"] == "finished":
            return 0
        time.sleep(args.watch)


def status_table(status: dict[str, Any], where: str = "", busiest: int = 20) -> list[str]:
    """A running server's state for a person: totals, workers, the busiest hosts, errors."""
    stats = status["stats"]
    pages, items, elapsed = stats.get("pages", 0), stats.get("items", 0), status["elapsed_s"]
    failed = {k: v for k, v in stats.items() if k.startswith(("failed/", "errors/"))}
    reason = f" ({status['close_reason']})" if status["close_reason"] else ""
    at = f" at {where}" if where else ""
    lines = [
        f"crawl {status['state']}{reason}{at}, {elapsed:.0f}s",
        f"  pages {pages} ({pages / max(elapsed, 1e-9):.1f}/s)   items {items}   queued "
        f"{status['queued']}   in flight {status['in_flight']}   seen {status['seen']}   "
        f"errors {sum(failed.values())}   dead letters {stats.get('dead_letters', 0)}",
    ]
    results = status.get("results")
    if results is not None:  # service mode
        lines.append(
            f"  results: {results['held']} held (of {results['max_results']}), "
            f"{results['taken']} taken, {results['dropped']} dropped (the queue was full)"
        )
    if status.get("paused") or status.get("paused_hosts"):
        hosts_paused = ", ".join(status.get("paused_hosts", [])[:10])
        lines.append(
            f"  paused: {'leasing, farm-wide' if status.get('paused') else 'no'}"
            + (f"; hosts: {hosts_paused}" if hosts_paused else "")
        )
    spider_stats = status.get("spider_stats", {})
    if spider_stats:
        shown = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in
                 sorted(spider_stats.items())]  # fmt: skip
        lines.append("  spider stats: " + ", ".join(shown))
    workers = status.get("worker_detail", {})
    if workers:
        lines += ["", f"  {'worker':<40} {'state':<6} {'leases':>6} {'pages':>7} "
                  f"{'last seen':>10} {'loop lag':>9}"]  # fmt: skip
        for name, w in sorted(workers.items()):
            state = "alive" if w["alive"] else "dead"
            lines.append(
                f"  {name[:40]:<40} {state:<6} {w['leases']:>6} {w.get('pages', 0):>7} "
                f"{w['last_seen_s']:>9.1f}s {w['loop_lag_s']:>8.2f}s"
            )
    hosts = status.get("hosts", {})
    if hosts:
        top = sorted(hosts.items(), key=lambda kv: (-kv[1]["in_flight"], -kv[1]["queued"],
                                                     -kv[1]["pages"], kv[0]))[:busiest]  # fmt: skip
        lines += ["", f"  {'host':<40} {'queued':>7} {'in flight':>9} {'pages':>7} {'errors':>6} "
                  f"{'delay':>7}"]  # fmt: skip
        for host, h in top:
            lines.append(
                f"  {host[:40]:<40} {h['queued']:>7} {h['in_flight']:>9} {h['pages']:>7} "
                f"{h['errors']:>6} {h['delay_s']:>6.2f}s"
            )
        if len(hosts) > busiest:
            lines.append(f"  ... and {len(hosts) - busiest} more hosts (--json for all)")
    if failed:
        lines += ["", "  errors by reason:"]
        lines += [f"    {k}: {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1])]
    return lines
