"""What the cli's commands share: spider and feed options, items on standard output,
the server's configuration, and reporting what a crawl could not write."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..feeds import FeedSpec
from ..server import FarmServer, ServerConfig
from ..settings import Settings, parse_key_values

logger = logging.getLogger("spiderfarm")


def settings_help() -> str:
    rows = [f"  {name:<24} {default:<14} {text}" for name, default, text in Settings.describe()]
    return "settings (-s NAME=VALUE):\n" + "\n".join(rows)


def appended(text: str) -> tuple[bool, str]:
    return (False, text)


def overwritten(text: str) -> tuple[bool, str]:
    return (True, text)


def add_spider_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spider", help="a spider name found in --spiders-dir, or a path to a .py file")
    p.add_argument(
        "-o",
        "--output",
        dest="feeds",
        action="append",
        default=[],
        type=appended,
        metavar="FILE[:FORMAT]",
        help="append items to FILE (- for standard output); the format comes from its "
        "ending (.jsonl, .jl, .json, .csv, each also .gz) or from :FORMAT; repeatable",
    )
    p.add_argument(
        "-O",
        "--overwrite-output",
        dest="feeds",
        action="append",
        type=overwritten,
        metavar="FILE[:FORMAT]",
        help="like -o, but empty FILE first (a job dir that resumes it cuts it back instead)",
    )
    p.add_argument(
        "-a",
        dest="spider_args",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="spider argument, set as an attribute of the spider",
    )
    p.add_argument(
        "-s",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="setting (see the list below)",
    )
    p.add_argument(
        "--spiders-dir", default="spiders", help="where spiders live (default: %(default)s)"
    )
    p.add_argument(
        "--job-dir", type=Path, help="persist the crawl here; run again with it to resume"
    )
    p.add_argument(
        "--dead-letters", metavar="FILE", help="write requests that failed for good here (JSONL)"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="service mode: do not finish when the queue empties; take work from the task "
        "queue (push, spiderfarm.connect) and give results (results); see idle_close_s",
    )
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")


_FEED_FLAGS = frozenset({"-o", "--output", "-O", "--overwrite-output"})


def join_stdout_feeds(argv: Sequence[str] | None) -> list[str]:
    """``-o -:jsonl`` as ``-o=-:jsonl``: argparse would take a value that starts with a
    dash for an option of its own."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(args) - 2, -1, -1):
        if args[i] in _FEED_FLAGS and args[i + 1].startswith("-:"):
            args[i : i + 2] = [f"{args[i]}={args[i + 1]}"]
    return args


def feed_specs(args: argparse.Namespace) -> list[FeedSpec]:
    return [FeedSpec.parse(text, overwrite=overwrite) for overwrite, text in args.feeds]


@contextlib.contextmanager
def stdout_for_items(feeds: Sequence[FeedSpec]) -> Iterator[bool]:
    """With a feed on standard output, everything else this process prints goes to
    stderr, so that stdout holds the items and nothing else. Yields whether it does."""
    if not any(spec.is_stdout for spec in feeds):
        yield False
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield True


def server_config(
    args: argparse.Namespace, bind: tuple[str, int], authkey: bytes, feeds: list[FeedSpec]
) -> ServerConfig:
    return ServerConfig(
        spider_ref=args.spider,
        spiders_dir=Path(args.spiders_dir),
        spider_args=parse_key_values(args.spider_args, "-a"),
        overrides=parse_key_values(args.settings, "-s"),
        output=feeds,
        bind=bind,
        authkey=authkey,
        job_dir=getattr(args, "job_dir", None),
        serve=bool(getattr(args, "serve", False)),
    )


def report_problems(server: FarmServer) -> bool:
    """Print why a feed or the job dir does not hold the whole crawl (a full disk, say);
    True if anything was printed."""
    problems = server.problems()
    for text in problems:
        print(f"error: {text}", file=sys.stderr, flush=True)
    return bool(problems)


def write_dead_letters(path: str, dead: list[tuple[str, str, int]]) -> None:
    """The requests that failed for good, one JSON object per line."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            for url, reason, attempts in dead:
                fh.write(json.dumps({"url": url, "reason": reason, "attempts": attempts}) + "\n")
    except OSError as exc:
        print(f"error: cannot write dead letters to {path!r}: {exc.strerror}", file=sys.stderr)
        return
    print(f"{len(dead)} dead letters written to {path}", flush=True)
