"""Summarise a py-spy ``--format raw`` profile as text: per process, the hottest frames.

    py-spy record --format raw --subprocesses -r 200 -o crawl.raw -- \\
        python -m spiderfarm crawl catalogue -a start_url=URL -o out.jsonl --workers 1 -q
    python benchmarks/pyspy_summary.py crawl.raw --top 25

For each process: samples, then the top frames by self time (where the CPU is) and by
inclusive time (which calls it happens under), as a share of that process's samples.
``--group module`` folds frames into files (``spiderfarm/frontier.py``, ``parsel/...``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _key(frame: str, group: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    # Shorten site-packages paths to the package-relative name.
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if group == "module":
        return path
    if group == "function":
        return f"{m['func']} ({path})"
    return f"{m['func']} ({path}:{m['line']})"


def summarise(path: Path, top: int, group: str, min_pct: float) -> str:
    procs: dict[str, tuple[Counter[str], Counter[str], list[int]]] = {}
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # With --subprocesses the first frames name the processes: keep the innermost one.
        proc = "all"
        while frames and frames[0].startswith("process "):
            proc = frames.pop(0)
        if proc not in procs:
            procs[proc] = (Counter(), Counter(), [0])
        own, incl, total = procs[proc]
        total[0] += count
        if not frames:
            continue
        keys = [_key(f, group) for f in frames]
        own[keys[-1]] += count
        for k in set(keys):
            incl[k] += count
    out = []
    for proc, (own, incl, total) in sorted(procs.items(), key=lambda kv: -kv[1][2][0]):
        n = total[0]
        out.append(f"=== {proc[:160]}\n    {n} samples")
        for title, counter in (("self", own), ("inclusive", incl)):
            out.append(f"  -- top {top} by {title} time")
            for k, c in counter.most_common(top):
                pct = 100 * c / n
                if pct < min_pct:
                    break
                out.append(f"  {pct:5.1f}%  {k}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a py-spy raw profile.")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("line", "function", "module"), default="function")
    parser.add_argument("--min-pct", type=float, default=0.3)
    args = parser.parse_args(argv)
    print(summarise(args.profile, args.top, args.group, args.min_pct))
    return 0


if __name__ == "__main__":
    sys.exit(main())
