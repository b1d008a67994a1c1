"""The command line as a user meets it: clear errors, help, spider arguments, failures
counted by reason. Every test runs the real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import spiderfarm
from spiderfarm import prespawn
from tests.farm import (
    ServerProcess,
    environ_with_key,
    read_items,
    run_cli,
    start_worker,
    wait_all,
    write_key,
)
from tests.sites import REPO_ROOT, subprocess_environ

pytestmark = pytest.mark.timeout(120)


def write_spider(directory: Path, source: str, name: str = "myspider.py") -> Path:
    spiders = directory / "spiders"
    spiders.mkdir(exist_ok=True)
    path = spiders / name
    path.write_text(textwrap.dedent(source))
    return path


def test_unknown_spider_name_lists_the_known_ones(tmp_path: Path) -> None:
    result = run_cli(["crawl", "nope", "--workers", "1"])
    assert result.returncode == 2
    assert "no spider named 'nope' in 'spiders'" in result.stderr
    assert "catalogue, links, quotes" in result.stderr


def test_spider_file_with_syntax_error(tmp_path: Path) -> None:
    source = "from spiderfarm import Spider\nclass S(Spider)\n    name = 'x'\n"
    path = write_spider(tmp_path, source)
    result = run_cli(["crawl", str(path), "--workers", "1"])
    assert result.returncode == 2
    assert f"spider file {path}, line 2:" in result.stderr
    assert "fix the syntax error" in result.stderr


def test_invalid_start_url_is_named(tmp_path: Path) -> None:
    path = write_spider(
        tmp_path,
        """
        from spiderfarm import Spider
        class Bad(Spider):
            name = "bad"
            start_urls = ["http://127.0.0.1:1/ok", "htp//broken"]
        """,
    )
    result = run_cli(["crawl", str(path), "--workers", "1"])
    assert result.returncode == 2
    assert "bad start request" in result.stderr
    assert "'htp//broken'" in result.stderr
    assert "missing scheme" in result.stderr


def test_unwritable_output_path(tmp_path: Path, site: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "items.jsonl"  # a path under a regular file can never be created
    result = run_cli(["crawl", "links", "-a", f"start_url={site}", "-o", str(out)])
    assert result.returncode == 2
    assert f"cannot write the feed '{out}'" in result.stderr


def test_unknown_feed_extension(site: str, tmp_path: Path) -> None:
    result = run_cli(["crawl", "links", "-a", f"start_url={site}", "-o", str(tmp_path / "x.xml")])
    assert result.returncode == 2
    assert f"error: cannot tell the feed format of '{tmp_path / 'x.xml'}'" in result.stderr


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        (["-o", "{tmp}/items.out:xml"], "error: feed '{tmp}/items.out:xml': unknown format 'xml'"),
        (
            ["-O", "-"],
            "error: cannot tell the feed format of standard output: name it, as in -O -:jsonl",
        ),
        (
            ["-o", "{tmp}/a.jsonl", "-O", "{tmp}/a.jsonl"],
            "error: feed '{tmp}/a.jsonl' is given twice (-o/-O); give each feed once",
        ),
        (
            ["-o", "{tmp}/a.jsonl.gz", "--job-dir", "{tmp}/job"],
            "error: --job-dir cannot resume feed '{tmp}/a.jsonl.gz': a gzip feed; with a job "
            "dir write .jsonl, .json or .csv files (compress them once the crawl is done)",
        ),
        (
            ["-o", "-:jsonl", "--job-dir", "{tmp}/job"],
            "error: --job-dir cannot resume a feed on standard output; with a job dir write",
        ),
        (
            ["-O", "{tmp}/keep.jsonl", "-o", "{tmp}/file/items.csv"],
            "error: cannot write the feed '{tmp}/file/items.csv': Not a directory; "
            "choose a writable path with -o",
        ),
    ],
)
@pytest.mark.parametrize("command", ["crawl", "spiderfarm.server"])
def test_bad_feeds_exit_2_naming_them_before_anything_is_written(
    tmp_path: Path, feeds: list[str], message: str, command: str
) -> None:
    (tmp_path / "file").write_text("")
    keep = tmp_path / "keep.jsonl"
    keep.write_text('{"old": 1}\n')
    args = [
        "links",
        "-a",
        "start_url=http://127.0.0.1:9/",
        *(f.format(tmp=tmp_path) for f in feeds),
    ]
    if command == "crawl":
        result = run_cli(["crawl", *args, "--workers", "1"])
    else:
        result = subprocess.run(
            [sys.executable, "-m", "spiderfarm.server", *args, "--bind", "127.0.0.1:0",
             "--authkey-file", str(write_key(tmp_path))],
            cwd=REPO_ROOT, env=subprocess_environ(), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message.format(tmp=tmp_path) in result.stderr
    assert "listening on" not in result.stdout + result.stderr
    assert keep.read_text() == '{"old": 1}\n'  # -O empties nothing when another feed fails
    made = {p.name for p in tmp_path.iterdir()} - {"file", "keep.jsonl", "farm.key", "job"}
    assert made == set()  # no feed file was created


def test_unknown_setting_suggests_the_right_one(site: str) -> None:
    result = run_cli(["crawl", "links", "-a", f"start_url={site}", "-s", "concurency=4"])
    assert result.returncode == 2
    assert "unknown setting 'concurency'; did you mean 'concurrency'?" in result.stderr


def test_spider_argument_may_not_replace_a_method(site: str) -> None:
    result = run_cli(["crawl", "links", "-a", f"start_url={site}", "-a", "parse=1"])
    assert result.returncode == 2
    assert "spider argument 'parse' cannot be set" in result.stderr


def test_help_lists_every_setting() -> None:
    result = run_cli(["crawl", "--help"])
    assert result.returncode == 0
    for name in ("concurrency", "per_host_concurrency", "max_body_bytes", "depth_limit"):
        assert f"  {name} " in result.stdout


def test_worker_with_wrong_authkey_exits_with_a_clear_message(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    try:
        wrong = tmp_path / "wrong.key"
        wrong.write_text("ab" * 32)
        wrong.chmod(0o600)
        worker = start_worker(server.address, wrong)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 2
        assert f"the server at {server.address} refused our authkey" in err
        # The server shrugs off the bad peer and still serves a good worker.
        good = start_worker(server.address, key)
        assert wait_all([good], 60) == [0]
        assert server.wait(30) == 0
    finally:
        server.stop()


def test_worker_gives_up_on_an_unreachable_server(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = write_key(tmp_path)
    started = time.monotonic()
    worker = start_worker(f"127.0.0.1:{port}", key, "--give-up-s", "2")
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 2
    assert f"cannot reach the spiderfarm server at 127.0.0.1:{port} after 2s" in err
    assert time.monotonic() - started >= 2  # it did retry for the whole give-up time


def test_failures_are_counted_by_reason_and_the_crawl_goes_on(tmp_path: Path, site: str) -> None:
    path = write_spider(
        tmp_path,
        """
        from spiderfarm import Spider, Request

        class Mixed(Spider):
            name = "mixed"
            custom_settings = {"max_retries": 0}

            def start_requests(self):
                base = self.base
                yield Request(base + "page/good", callback=self.parse)
                yield Request(base + "page/boom", callback=self.explode)
                yield Request(base + "status/404", callback=self.parse)
                yield Request(base + "status/500", callback=self.parse)
                yield Request(base + "json", callback=self.parse_json)
                yield Request(base + "page/async", callback=self.parse_async)

            def parse(self, response):
                yield {"title": response.css("h1::text").get()}

            def explode(self, response):
                yield {"title": "before the error"}
                raise RuntimeError("spider bug on purpose")

            async def parse_json(self, response):
                return {"json": response.json()["items"]}

            async def parse_async(self, response):
                yield {"title": response.css("h1::text").get()}
        """,
    )
    out = tmp_path / "out.jsonl"
    result = run_cli(
        ["crawl", str(path), "-a", f"base={site}", "--workers", "1", "-o", str(out),
         "--log-level", "ERROR"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    items = sorted(json.dumps(i, sort_keys=True) for i in read_items(out))
    assert items == sorted(
        json.dumps(i, sort_keys=True)
        for i in (
            {"title": "good"}, {"title": "before the error"}, {"json": [1, 2, 3]},
            {"title": "async"},
        )
    )  # fmt: skip
    assert "crawl finished: 4 pages, 4 items, 3 errors" in result.stdout
    assert f"dead letter: {site}status/500 (http_500, 1 attempts)" in result.stdout
    assert "errors/callback_error: 1" in result.stdout
    assert "failed/http_404: 1" in result.stdout
    assert "failed/http_500: 1" in result.stdout
    # The traceback is logged once, with the spider's own line in it.
    assert result.stderr.count("RuntimeError: spider bug on purpose") == 1
    assert "Traceback" in result.stderr


def test_status_command_reports_a_running_server(tmp_path: Path, site: str) -> None:
    key = write_key(tmp_path)
    server = ServerProcess(["links", "-a", f"start_url={site}"], key, tmp_path)
    try:
        result = run_cli(["status", "--connect", server.address, "--json"], env=environ_with_key())
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["state"] == "running"
        assert status["queued"] == 2  # the start URL, held until robots.txt is fetched
        assert status["in_flight"] == 0
        table = run_cli(["status", "--connect", server.address], env=environ_with_key())
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].startswith(f"crawl running at {server.address}, ")
        assert lines[1].startswith("  pages 0 (0.0/s)   items 0   queued 2   in flight 0   seen 1")
        host = site.split("/")[2]
        row = next(line for line in lines if line.startswith(f"  {host}"))
        assert row.split() == [host, "1", "0", "0", "0", "0.00s"]  # robots.txt; the page waits
    finally:
        server.stop()


def test_summary_names_a_host_that_keeps_failing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on: every connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write_spider(
        tmp_path,
        f"""
        from spiderfarm import Spider

        class Dead(Spider):
            name = "dead"
            custom_settings = {{"max_retries": 0, "obey_robots": False}}
            start_urls = [f"http://127.0.0.1:{port}/{{n}}" for n in range(4)]
        """,
    )
    result = run_cli(["crawl", str(path), "--workers", "1"])
    assert result.returncode == 0, result.stderr
    assert "crawl finished: 0 pages, 0 items, 4 errors" in result.stdout
    assert "failed/refused: 4" in result.stdout
    assert f"host backed off: 127.0.0.1:{port} (4 connection failures in a row" in result.stdout


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0
    assert result.stdout == f"spiderfarm {spiderfarm.__version__}\n"


# --- crawl forks its workers before it imports the server (spiderfarm/prespawn.py) -----

WHO_AM_I = """
    import os, sys
    from pathlib import Path
    from spiderfarm import Request, Spider

    # What a worker never needs: loaded, it would cost every worker its import time.
    SERVER_SIDE = ("spiderfarm.cli", "spiderfarm.server", "spiderfarm.frontier",
                   "spiderfarm.console", "spiderfarm.feeds", "aiohttp.web", "prometheus_client")
    PACKAGES = tuple(name + "." for name in SERVER_SIDE)

    class Who(Spider):
        name = "who"

        def start_requests(self):
            yield Request(self.start_url, meta={"handle_httpstatus_all": True})

        def parse(self, response):
            yield {
                "argv": sys.argv[1:],
                "key_in_env": "SPIDERFARM_AUTHKEY" in os.environ,
                "name": Path("/proc/self/comm").read_text().strip(),
                "server_side": sorted(
                    m for m in sys.modules if m in SERVER_SIDE or m.startswith(PACKAGES)
                ),
            }
"""


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _crawl_who(
    tmp_path: Path, site: str, *options: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``crawl who`` (WHO_AM_I) with ``options``, from a spiders dir of its own."""
    write_spider(tmp_path, WHO_AM_I)
    spiders = str(tmp_path / "spiders")
    result = run_cli(
        ["crawl", "who", "--spiders-dir", spiders, "-q", "-a", f"start_url={site}", *options]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, spiders


def test_crawl_forks_its_workers_before_the_server_and_tells_them_where_on_a_pipe(
    tmp_path: Path, site: str
) -> None:
    out = tmp_path / "out.jsonl"
    _, spiders = _crawl_who(tmp_path, site, "--workers", "1", "-o", str(out))
    [item] = read_items(out)
    # forked from crawl (its command line), named so, before crawl loaded the server
    assert item["argv"] == [
        "crawl", "who", "--spiders-dir", spiders, "-q", "-a", f"start_url={site}",
        "--workers", "1", "-o", str(out),
    ]  # fmt: skip
    assert item["name"] == prespawn.WORKER_NAME
    assert item["server_side"] == []
    assert item["key_in_env"] is False  # told on a pipe


def test_demo_forks_its_workers_too(tmp_path: Path) -> None:
    # demo takes ./spiders/catalogue.py when there is one: here, one that says who runs it
    write_spider(tmp_path, WHO_AM_I.replace('name = "who"', 'name = "catalogue"'), "catalogue.py")
    result = run_cli(["demo", "--pages", "5", "--workers", "2", "--no-console"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [item] = read_items(tmp_path / "demo-items.jsonl")
    assert item["argv"] == ["demo", "--pages", "5", "--workers", "2", "--no-console"]
    assert item["name"] == prespawn.WORKER_NAME and item["server_side"] == []


def test_no_fork_while_another_thread_runs(tmp_path: Path, site: str) -> None:
    # A thread started before crawl's code runs (here by a sitecustomize) could hold a
    # lock the fork would copy held: crawl starts its workers the usual way instead.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    env = subprocess_environ()
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")])
    write_spider(tmp_path, WHO_AM_I)
    out = tmp_path / "out.jsonl"
    result = run_cli(
        ["crawl", "who", "--spiders-dir", str(tmp_path / "spiders"), "-q", "-a",
         f"start_url={site}", "--workers", "1", "-o", str(out)],
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [item] = read_items(out)
    argv = item["argv"]
    assert isinstance(argv, list) and argv[0] == "--connect" and item["key_in_env"] is True


def test_workers_started_for_other_options_are_dismissed_and_started_again(
    tmp_path: Path, site: str
) -> None:
    out = tmp_path / "out.jsonl"
    # "--work N" is --workers N to crawl's parser, not to the early one (which starts one
    # per CPU): the early workers are dismissed, N are started the usual way.
    n = str((os.cpu_count() or 1) + 1)
    _, spiders = _crawl_who(tmp_path, site, "--work", n, "-o", str(out))
    [item] = read_items(out)
    argv = item["argv"]
    assert isinstance(argv, list) and argv[0] == "--connect" and "--connect-stdin" not in argv
    assert item["key_in_env"] is True
    assert item["server_side"] == []  # python -m spiderfarm.worker loads no more than a fork
    assert _processes_naming(spiders) == []
    # a feed on stdout: the workers' stdout goes to stderr, so none is started early
    result, _ = _crawl_who(tmp_path, site, "--workers", "1", "-o", "-:jsonl")
    assert json.loads(result.stdout)["argv"][0] == "--connect"


WHERE_AM_I = """
    import json, os
    from pathlib import Path
    from spiderfarm import Request, Spider

    class Where(Spider):
        name = "where"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            # every process that builds the spider (crawl itself, each worker on hello)
            # says where it may run: whether a worker gets pages is up to the scheduler
            where = {"ppid": os.getppid(), "cpus": sorted(os.sched_getaffinity(0))}
            Path(self.where_dir, f"{os.getpid()}.json").write_text(json.dumps(where))

        def start_requests(self):
            for n in range(40):  # slow pages: the crawl outlasts every worker's hello
                yield Request(f"{self.start_url}delay/0.2?n={n}")

        def parse(self, response):
            yield {"n": response.url.rsplit("=", 1)[1]}
"""


def _cpus_of_workers(tmp_path: Path, site: str, *options: str) -> dict[int, list[int]]:
    """Each worker's pid and the CPUs it may run on, from a crawl of 40 slow pages."""
    write_spider(tmp_path, WHERE_AM_I)
    where = tmp_path / "where"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir()
    out = tmp_path / "where.jsonl"
    result = run_cli(
        ["crawl", "where", "--spiders-dir", str(tmp_path / "spiders"), "-q", "-a",
         f"start_url={site}", "-a", f"where_dir={where}", "-O", str(out),
         "--workers", "2", *options],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(int(str(i["n"])) for i in read_items(out)) == list(range(40))
    seen = {int(f.stem): json.loads(f.read_text()) for f in where.iterdir()}
    # crawl's own spider is the one whose parent is this test; the rest are its workers
    [crawl_pid] = [pid for pid, w in seen.items() if w["ppid"] == os.getpid()]
    return {pid: w["cpus"] for pid, w in seen.items() if w["ppid"] == crawl_pid}


def test_forked_workers_are_pinned_each_to_a_cpu_of_its_own_unless_no_pin(
    tmp_path: Path, site: str
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to pin two workers to")
    pinned = _cpus_of_workers(tmp_path, site)
    assert len(pinned) == 2
    assert sorted(pinned.values()) == [[cpus[0]], [cpus[1]]]
    free = _cpus_of_workers(tmp_path, site, "--no-pin")
    assert len(free) == 2 and list(free.values()) == [cpus, cpus]
    # more workers than CPUs: none is pinned (two would share one CPU while another idles)
    more = _cpus_of_workers(tmp_path, site, "--workers", str(len(cpus) + 1))
    assert len(more) == len(cpus) + 1 and set(map(tuple, more.values())) == {tuple(cpus)}


def test_a_crawl_that_fails_to_start_leaves_no_worker_behind(tmp_path: Path) -> None:
    spiders = tmp_path / "spiders"
    spiders.mkdir()
    result = run_cli(["crawl", "nope", "--spiders-dir", str(spiders), "--workers", "2"])
    assert result.returncode == 2
    # the one error, and nothing from the workers that were waiting to be told where to go
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: no spider named 'nope'"), result.stderr
    deadline = time.monotonic() + 10
    while _processes_naming(str(spiders)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(str(spiders)) == []


def test_a_console_that_cannot_start_after_the_workers_were_told_leaves_no_worker(
    tmp_path: Path, site: str
) -> None:
    """crawl tells its workers where to go before it loads and starts the console (they
    crawl meanwhile); when the console then fails (an address not this machine's), the
    error is crawl's only output and no worker is left."""
    write_spider(tmp_path, WHO_AM_I)
    spiders = str(tmp_path / "spiders")
    result = run_cli(
        ["crawl", "who", "--spiders-dir", spiders, "--workers", "2", "-a",
         f"start_url={site}delay/2", "--console", "192.0.2.77:0",
         "--authkey-file", str(write_key(tmp_path))],
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot serve the console on 192.0.2.77:0"), result.stderr
    deadline = time.monotonic() + 10
    while _processes_naming(spiders) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(spiders) == []


def test_worker_connect_stdin_exits_quietly_on_a_closed_pipe_and_names_a_bad_line() -> None:
    argv = [sys.executable, "-m", "spiderfarm.worker", "--connect-stdin"]
    env = subprocess_environ()

    def run(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
        )

    quiet = run(argv, "")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    bad = run(argv, "127.0.0.1:1 not-hex\n")
    assert bad.returncode == 2
    assert "--connect-stdin: expected 'HOST:PORT KEYHEX' on stdin" in bad.stderr
    both = run([*argv, "--connect", "127.0.0.1:1"], "")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
