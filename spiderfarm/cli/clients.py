"""``push`` and ``results``: the shell's clients of a serving farm (``--serve``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

from ..errors import SpiderfarmError
from ..service import FarmClient, Submitted, connect

__all__ = ["add_client_commands", "run_push", "run_results"]

_SHOWN_REFUSALS = 20


def add_client_commands(sub: Any) -> None:
    """The ``push`` and ``results`` subcommands."""
    push = sub.add_parser(
        "push",
        help="put URLs (or JSON request lines) into a serving farm",
        description='Read URLs, one per line, or JSON objects ({"url": ..., '
        '"callback": ..., "meta": ...}) from FILE or standard input, and queue them in a '
        "farm started with --serve, in batches. Blank lines and lines starting with # are "
        "skipped. Prints what was accepted, filtered and refused to stderr.",
    )
    push.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="default: stdin")
    push.add_argument(
        "--wait",
        action="store_true",
        help="then print results (JSON lines) until every URL pushed has its own",
    )
    push.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="with --wait: give up after S seconds with no result (exit 1)",
    )
    results = sub.add_parser(
        "results",
        help="print a serving farm's results as JSON lines",
        description="Take results from a serving farm's result queue and print them, one "
        "JSON object per line (url, ok, status, reason, items, meta, root). Results taken "
        "here are gone from the queue for other readers.",
    )
    results.add_argument("-n", type=int, default=None, metavar="N", help="stop after N results")
    results.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="stop when no result came for S seconds (default: wait)",
    )
    for p in (push, results):
        p.add_argument("--connect", required=True, metavar="HOST:PORT")
        p.add_argument("--authkey-file", help="the farm's key (or set SPIDERFARM_AUTHKEY)")
        p.add_argument("--log-level", default="WARNING")


def _tasks(lines: IO[str], bad: list[str], numbers: list[int]) -> Iterator[str | dict[str, Any]]:
    """The tasks of a file: URL lines, and JSON object lines; an unreadable line is
    noted in ``bad`` and skipped, and each task's line number is added to ``numbers``."""
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                task = json.loads(line)
            except ValueError as exc:
                bad.append(f"line {number}: not a JSON object ({exc})")
                continue
            numbers.append(number)
            yield task
        else:
            numbers.append(number)
            yield line


def _client(args: argparse.Namespace) -> FarmClient:
    return connect(args.connect, authkey_file=args.authkey_file)


def _print_result(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


def run_push(args: argparse.Namespace) -> int:
    client = _client(args)
    bad: list[str] = []
    numbers: list[int] = []
    started = time.perf_counter()
    if args.file == "-":
        done = client.submit(_tasks(sys.stdin, bad, numbers))
    else:
        try:
            with open(args.file, encoding="utf-8") as fh:
                done = client.submit(_tasks(fh, bad, numbers))
        except OSError as exc:
            raise SpiderfarmError(f"cannot read {args.file!r}: {exc.strerror}") from None
    elapsed = time.perf_counter() - started
    bad += [f"line {numbers[i]}: {message.removeprefix('task: ')}" for i, message in done.refused]
    _report(done, bad, elapsed)
    if not args.wait:
        return 1 if bad else 0
    own = Counter(done.urls)
    own.update(url for url, _ in done.filtered)
    waiting = sum(own.values())
    while waiting:
        got = False
        for result in client.results(timeout=args.timeout, limit=waiting):
            got = True
            _print_result(result)
            url = result["url"]
            if url == result["root"] and own[url] > 0:
                own[url] -= 1
                waiting -= 1
        sys.stdout.flush()
        if not got:
            print(f"error: no result for {args.timeout}s; {waiting} still to come", file=sys.stderr)
            return 1
    return 1 if bad else 0


def _report(done: Submitted, bad: list[str], elapsed: float) -> None:
    total = done.accepted + len(done.filtered) + len(bad)
    print(
        f"pushed {total} tasks in {elapsed:.2f}s: {done.accepted} accepted, "
        f"{len(done.filtered)} filtered, {len(bad)} refused",
        file=sys.stderr,
    )
    reasons = Counter(reason for _, reason in done.filtered)
    for reason, n in reasons.most_common():
        print(f"  {reason}: {n}", file=sys.stderr)
    for text in bad[:_SHOWN_REFUSALS]:
        print(f"  refused {text}", file=sys.stderr)
    if len(bad) > _SHOWN_REFUSALS:
        print(f"  ... and {len(bad) - _SHOWN_REFUSALS} more refused", file=sys.stderr)


def run_results(args: argparse.Namespace) -> int:
    client = _client(args)
    for result in client.results(timeout=args.timeout, limit=args.n):
        _print_result(result)
        sys.stdout.flush()
    return 0
